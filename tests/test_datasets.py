"""Dataset folders (``--dataset PATH``): both layouts, the checks that refuse a bad folder, unreadable files skipped
and counted, the hash, and the model's preprocessing. No torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from precompute.datasets.images import DatasetError, prepare, scan_folder
from precompute.registry import Preprocess
from store.keys import DatasetKey

PREPROCESS = Preprocess(size=16, resize=20)


def picture(path: Path, width: int = 30, height: int = 24, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_class_folders_are_read_like_imagefolder(tmp_path: Path):
    for i, name in enumerate(["cat/a.png", "cat/b.JPG", "dog/deeper/c.jpeg", "dog/d.png"]):
        picture(tmp_path / name, seed=i)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    found = scan_folder(tmp_path, PREPROCESS)
    assert found.layout == "classes" and found.items == ["cat/a.png", "cat/b.JPG", "dog/d.png", "dog/deeper/c.jpeg"]
    images, read = found.read([0, 3])
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8 and read == [0, 3]
    assert found.provenance() == {DatasetKey.NAME: tmp_path.name, DatasetKey.SOURCE: str(tmp_path.resolve()),
                                  DatasetKey.LAYOUT: "classes", DatasetKey.IMAGES: 4, DatasetKey.SKIPPED: 0,
                                  DatasetKey.SHA256: found.sha256}


def test_a_flat_folder_and_its_hash_follows_the_bytes(tmp_path: Path):
    for i in range(3):
        picture(tmp_path / f"{i}.png", seed=i)
    first = scan_folder(tmp_path, PREPROCESS)
    assert first.layout == "flat" and len(first) == 3 and scan_folder(tmp_path, PREPROCESS).sha256 == first.sha256
    picture(tmp_path / "1.png", seed=9)
    assert scan_folder(tmp_path, PREPROCESS).sha256 != first.sha256


def test_unreadable_files_are_skipped_and_counted(tmp_path: Path):
    picture(tmp_path / "good.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    found = scan_folder(tmp_path, PREPROCESS)
    assert found.items == ["good.png"] and sorted(found.skipped) == ["broken.jpg", "empty.png"]
    assert found.provenance()[DatasetKey.SKIPPED] == 2


def test_a_file_that_fails_to_decode_later_is_dropped_from_its_batch(tmp_path: Path):
    for i in range(3):
        picture(tmp_path / f"{i}.png", seed=i)
    found = scan_folder(tmp_path, PREPROCESS)
    (tmp_path / "1.png").write_bytes(b"gone bad after the scan")
    batches = list(found.batches(2))
    assert [read for _, read in batches] == [[0], [2]] and all(len(images) == 1 for images, _ in batches)


@pytest.mark.parametrize("layout, message", [
    ("missing", "does not exist"), ("file", "is a file"), ("empty", "no JPEG or PNG images"),
    ("mixed", "both directly in it"), ("all broken", "none of the 1 images"),
])
def test_bad_folders_are_refused_with_what_is_wrong(tmp_path: Path, layout: str, message: str):
    root = tmp_path / "data"
    if layout == "file":
        picture(root.with_suffix(".png"))
        root = root.with_suffix(".png")
    elif layout == "empty":
        (root / "cat").mkdir(parents=True)
        (root / "readme.txt").write_text("no images here")
    elif layout == "mixed":
        picture(root / "a.png")
        picture(root / "cat" / "b.png")
    elif layout == "all broken":
        root.mkdir()
        (root / "x.png").write_bytes(b"nope")
    with pytest.raises(DatasetError, match=message):
        scan_folder(root, PREPROCESS)


def test_preprocessing_resizes_the_shorter_side_and_cuts_the_centre():
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, 30:50] = 255  # a white band in the middle of a wide image
    prepared = prepare(Image.fromarray(pixels), Preprocess(size=16, resize=20))
    assert prepared.shape == (16, 16, 3)
    # 80x40 -> 40x20, centre 16 columns are 12..28 of 40: the band (15..25 after resizing) sits in the middle
    assert prepared[:, 8].mean() > 200 and prepared[:, 0].mean() < 30 and prepared[:, 15].mean() < 30
    assert Preprocess(16, 16, (-1.0, 1.0)).affine() == ([-1.0] * 3, [2.0] * 3)  # x in [0, 1] -> 2x - 1
