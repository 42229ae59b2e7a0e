"""A real precompute of the embedded organism on a dataset folder: its dataset examples, crop boxes, weights and
layer views are what the model and its weights say, recomputed here independently; bad dataset input fails clearly
and writes nothing."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from precompute.datasets.images import prepare, to_tensor
from precompute.datasets.patterns import CLASSES, make_batch
from precompute.loaders import load_tinyvision, tinyvision_examples
from precompute.registry import TINYVISION
from tests.conftest import SMALL_DATASET, atlascope

RUN = ["--layers", "conv2,conv4", "--units", "0-3", "--objectives", "channel", "--steps", "4", "--batch-size", "4",
       "--device", "cpu"]
CLASSES_USED = ("grating_45", "astronaut")  # a pattern and a photo class


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder-style folder: two classes of 40 held-out images each, and one file that is not an image."""
    root = tmp_path_factory.mktemp("images")
    batch = make_batch(len(CLASSES) * 40, "test", seed=7)
    for name in CLASSES_USED:
        (root / name).mkdir()
        for i, image in enumerate(batch.images[batch.labels == CLASSES.index(name)][:40]):
            Image.fromarray(image).resize((96, 80)).save(root / name / f"{i:03d}.png")  # the loader resizes back
    (root / CLASSES_USED[0] / "broken.png").write_bytes(b"not a png")
    return root


@pytest.fixture(scope="module")
def cat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import skimage.data

    path = tmp_path_factory.mktemp("inputs") / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(path)
    return path


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory, dataset: Path, cat: Path) -> Path:
    atlas = tmp_path_factory.mktemp("atlas")
    done = atlascope("precompute", "tinyvision", "--atlas", str(atlas), "--dataset", str(dataset),
                     "--caricature", str(cat), *RUN)
    assert done.returncode == 0, done.stderr
    assert "80 images (classes); 1 unreadable file(s) skipped: grating_45/broken.png" in done.stderr
    return atlas


def query(atlas: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True) as db:
        return db.execute(sql, args).fetchall()


def examples(atlas: Path, layer: str, kind: str) -> dict[int, list[tuple]]:
    """unit -> [(rank, activation, item, cell, box, asset width)] of one layer's examples of ``kind``."""
    found: dict[int, list[tuple]] = {}
    for unit, rank, activation, source, width in query(
            atlas, "SELECT u.[index], e.rank, e.activation, e.source, a.width FROM examples e JOIN units u ON "
                   "u.id = e.unit_id JOIN layers l ON l.id = u.layer_id JOIN assets a ON a.sha256 = e.asset_sha256 "
                   "WHERE l.name = ? AND e.kind = ? ORDER BY u.[index], e.rank", layer, kind):
        source = json.loads(source)
        found.setdefault(unit, []).append((rank, activation, source["item"], source["cell"], source["box"], width))
    return found


def conv4_maxima(dataset: Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Every readable image's name, and conv4's spatial max per image and unit [images, 128] with its flat cell."""
    items = sorted(p.relative_to(dataset).as_posix() for p in dataset.rglob("*.png") if p.name != "broken.png")
    pictures = np.stack([prepare(Image.open(dataset / item), TINYVISION.preprocess) for item in items])
    model, captured = load_tinyvision(), {}
    model.conv4.register_forward_hook(lambda _m, _i, out: captured.setdefault("conv4", out))
    with torch.no_grad():
        model(to_tensor(pictures))
    values, cells = captured["conv4"].flatten(2).max(dim=2)  # [images, units]
    return items, values, cells


def receptive_box(y: int, x: int) -> tuple[int, int, int, int]:
    """The input pixels conv4's cell (y, x) sees, by TinyVision's layer arithmetic (kernel, stride, padding), clipped
    to the 64x64 input: conv1 5/1/2, pool 2/2/0, conv2 3/1/1, pool, conv3 3/1/1, pool, conv4 3/1/1."""
    ops = [(5, 1, 2), (2, 2, 0), (3, 1, 1), (2, 2, 0), (3, 1, 1), (2, 2, 0), (3, 1, 1)]
    span = [(y, y), (x, x)]
    for kernel, stride, padding in reversed(ops):
        span = [(lo * stride - padding, hi * stride - padding + kernel - 1) for lo, hi in span]
    (top, bottom), (left, right) = span
    return max(left, 0), max(top, 0), min(right, 63) + 1, min(bottom, 63) + 1


def test_top_examples_are_the_images_that_drive_each_unit_most(atlas: Path, dataset: Path):
    items, values, cells = conv4_maxima(dataset)
    stored = examples(atlas, "conv4", "top")
    assert sorted(stored) == list(range(128))  # every unit of the layer, not only the rendered ones
    for unit in (0, 5, 77, 127):
        best = values[:, unit].topk(32)
        assert [row[0] for row in stored[unit]] == list(range(32))
        assert [row[2] for row in stored[unit]][0] == items[best.indices[0]]
        assert np.allclose([row[1] for row in stored[unit]], best.values.tolist(), atol=1e-5)
        for rank in range(3):
            image = best.indices[rank]
            assert stored[unit][rank][2] == items[image]
            assert stored[unit][rank][3] == list(divmod(cells[image, unit].item(), 8))


def test_each_crop_box_is_the_receptive_field_of_its_max_cell(atlas: Path):
    for unit, rows in examples(atlas, "conv4", "top").items():
        for _, _, _, (y, x), box, width in rows:
            assert tuple(box) == receptive_box(y, x) and width == 64
    edge = receptive_box(0, 0)
    assert edge[:2] == (0, 0) and edge[2] < 64  # a corner cell's field is clipped at the image's edge


def test_middle_examples_lie_between_the_units_quartiles(atlas: Path, dataset: Path):
    items, values, _ = conv4_maxima(dataset)
    middle = examples(atlas, "conv4", "middle")
    for unit, stats in query(atlas, "SELECT u.[index], u.stats FROM units u JOIN layers l ON l.id = u.layer_id "
                                    "WHERE l.name = 'conv4' AND u.[index] < 8"):
        stats = json.loads(stats)
        q25, _, q75 = stats["quartiles"]
        assert np.allclose(stats["quartiles"], values[:, unit].quantile(torch.tensor([0.25, 0.5, 0.75])).tolist(),
                           atol=1e-5)
        assert stats["examples_n"] == 80 and len(middle[unit]) == 6
        for _, activation, item, *_ in middle[unit]:
            assert q25 - 1e-5 <= activation <= q75 + 1e-5
            assert activation == pytest.approx(values[items.index(item), unit].item(), abs=1e-5)


def test_every_image_is_stored_once_however_many_units_use_it(atlas: Path):
    (used, distinct), = query(atlas, "SELECT count(*), count(DISTINCT asset_sha256) FROM examples")
    assert used == (64 + 128) * (32 + 6) and distinct <= 80


def test_strongest_input_is_the_largest_folded_kernel(atlas: Path):
    model = load_tinyvision()
    conv, bn = model.conv4[0], model.conv4[1]
    folded = conv.weight * (bn.weight / (bn.running_var + bn.eps).sqrt()).view(-1, 1, 1, 1)  # [128, 96, 3, 3]
    norms = folded.flatten(2).norm(dim=2).detach()  # [dst, src]
    for unit in (0, 3, 64, 127):
        (src, weight, kind, width), = query(
            atlas, "SELECT s.[index], e.weight, e.kind, a.width FROM edges e JOIN units d ON d.id = e.dst_unit_id "
                   "JOIN layers dl ON dl.id = d.layer_id JOIN units s ON s.id = e.src_unit_id JOIN assets a ON "
                   "a.sha256 = e.asset_sha256 WHERE dl.name = 'conv4' AND d.[index] = ? ORDER BY abs(e.weight) DESC "
                   "LIMIT 1", unit)
        assert src == norms[unit].argmax().item() and kind == "expanded_weight"
        # through the 2x2 max pool, read as an average: every kernel weight is spread over 4 cells at a quarter
        assert abs(weight) == pytest.approx(norms[unit].max().item() / 2, rel=1e-4)
        assert width == 6  # a 3x3 kernel behind a stride-2 pool covers 6x6 cells of conv3
    (inputs,), = query(atlas, "SELECT count(*) FROM edges e JOIN units d ON d.id = e.dst_unit_id JOIN layers l ON "
                              "l.id = d.layer_id WHERE l.name = 'conv4' AND d.[index] = 0")
    assert inputs >= 16


def test_layer_views_and_dataset_provenance(atlas: Path, dataset: Path):
    views = query(atlas, "SELECT l.name, v.kind, v.name, v.source_sha256 IS NOT NULL FROM layer_images v "
                         "JOIN layers l ON l.id = v.layer_id ORDER BY l.name, v.kind")
    assert views == [("conv2", "caricature", "chelsea", 1), ("conv2", "deepdream", "", 0),
                     ("conv4", "caricature", "chelsea", 1), ("conv4", "deepdream", "", 0)]
    config = json.loads(query(atlas, "SELECT config FROM runs ORDER BY id DESC LIMIT 1")[0][0])
    assert config["dataset"] | {"sha256": None} == {"name": dataset.name, "source": str(dataset.resolve()),
                                                   "layout": "classes", "images": 80, "skipped": 1, "sha256": None}


def test_a_rerun_leaves_examples_weights_and_views_as_they_are(atlas: Path, dataset: Path, cat: Path):
    before = query(atlas, "SELECT (SELECT max(id) FROM examples), (SELECT max(id) FROM edges), "
                          "(SELECT max(id) FROM layer_images)")
    done = atlascope("precompute", "tinyvision", "--atlas", str(atlas), "--dataset", str(dataset),
                     "--caricature", str(cat), *RUN)
    assert done.returncode == 0, done.stderr
    assert query(atlas, "SELECT (SELECT max(id) FROM examples), (SELECT max(id) FROM edges), "
                        "(SELECT max(id) FROM layer_images)") == before


def test_without_a_dataset_the_organisms_held_out_images_rank_its_units(tmp_path: Path):
    atlas = tmp_path / "atlas"
    done = atlascope("precompute", "tinyvision", "--atlas", str(atlas), "--layers", "conv1", "--units", "0",
                     "--objectives", "channel", "--steps", "1", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    built_in = tinyvision_examples()
    config = json.loads(query(atlas, "SELECT config FROM runs ORDER BY id DESC LIMIT 1")[0][0])
    assert config["dataset"] == {"name": "tinyvision-heldout", "source": "built-in", "layout": "built-in",
                                 "images": 2040, "skipped": 0, "sha256": built_in.sha256}
    pictures, _ = built_in.read(list(range(len(built_in))))
    model, captured = load_tinyvision(), {}
    model.conv1.register_forward_hook(lambda _m, _i, out: captured.setdefault("conv1", out))
    with torch.no_grad():
        model(to_tensor(pictures))
    best = captured["conv1"].flatten(2).amax(dim=2).topk(32, dim=0).indices  # [32, units]
    stored = examples(atlas, "conv1", "top")
    assert len(stored) == 32  # every unit of conv1
    for unit in (0, 17, 31):
        assert [row[2] for row in stored[unit][:3]] == [f"test/{i}" for i in best[:3, unit].tolist()]


def test_another_dataset_ranks_the_chosen_layers_again(atlas: Path, dataset: Path, tmp_path: Path):
    copy = tmp_path / "atlas"
    shutil.copytree(atlas, copy)
    done = atlascope("precompute", "tinyvision", "--atlas", str(copy), "--dataset", str(SMALL_DATASET),
                     "--layers", "conv2", "--units", "0-3", "--objectives", "channel", "--steps", "4",
                     "--device", "cpu")
    assert done.returncode == 0, done.stderr
    datasets = dict(query(copy, "SELECT l.name, group_concat(DISTINCT json_extract(e.source, '$.dataset')) FROM "
                                "examples e JOIN units u ON u.id = e.unit_id JOIN layers l ON l.id = u.layer_id "
                                "GROUP BY l.name"))
    assert datasets == {"conv2": SMALL_DATASET.name, "conv4": dataset.name}  # conv4 was not chosen: kept
    assert examples(copy, "conv2", "top")[0][0][2] in {p.relative_to(SMALL_DATASET).as_posix()
                                                      for p in SMALL_DATASET.rglob("*.png")}


@pytest.mark.parametrize("args, message", [
    (["tinyvision", "--dataset", "{tmp}/nowhere"], "does not exist"),
    (["tinyvision", "--dataset", "{tmp}/empty"], "no JPEG or PNG images in"),
    (["tinyvision", "--caricature", "{tmp}/empty/notes.txt"], "not a readable image"),
    (["tinylm-sparse", "--dataset", "{tmp}/empty"], "--dataset and --caricature are for vision models"),
])
def test_bad_dataset_input_fails_clearly_and_writes_nothing(tmp_path: Path, args: list[str], message: str):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    atlas = tmp_path / "atlas"
    done = atlascope("precompute", *[a.format(tmp=tmp_path) for a in args], "--atlas", str(atlas))
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not atlas.exists()
