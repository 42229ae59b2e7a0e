"""The precompute job on the embedded organism: what it writes, that it resumes after Ctrl-C or kill -9 to the very
same assets, that runs on one atlas take turns and count what they did, that it repairs missing or damaged blobs,
upgrades older atlases and collects garbage, and that bad input fails clearly without touching the atlas."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from store import FORMAT_VERSION, Atlas, AtlasError
from store.schema import Base
from tests.conftest import ATLASCOPE, SHORT_PRECOMPUTE, SMALL_DATASET, atlascope, short_precompute
from tests.damage import killed_mid_commit, orphan_blob, tmp_file, unreferenced_asset

TINY = ["--layers", "conv1", "--objectives", "channel", "--steps", "8", "--batch-size", "4", "--dataset",
        str(SMALL_DATASET), "--device", "cpu"]
# The interrupted runs: atlas_dir's first layer only, the same four render batches (so the same 16 images) for about a
# quarter of its work.
FIRST_LAYER = short_precompute("conv1")


def images(atlas: Path) -> set[tuple[str, int, str, str]]:
    """(layer, unit, kind, sha256) of every unit image in the atlas."""
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True, timeout=30) as db:
        return set(db.execute("SELECT l.name, u.[index], i.kind, i.asset_sha256 FROM unit_images i "
                              "JOIN units u ON u.id = i.unit_id JOIN layers l ON l.id = u.layer_id"))


def count_images(atlas: Path) -> int:
    try:
        return len(images(atlas))
    except sqlite3.OperationalError:  # no table yet, or the writer holds the lock
        return 0


# Every column that names an asset: images of units and layers, examples' images, edges' kernels, caricatures' inputs
ASSET_COLUMNS = ("unit_images.asset_sha256", "examples.asset_sha256", "edges.asset_sha256",
                 "layer_images.asset_sha256", "layer_images.source_sha256")


def assert_consistent(atlas: Path) -> None:
    """Every indexed asset is a complete blob whose bytes hash to its name and a row uses it; there are no other blob
    files and no temporary files."""
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True) as db:
        assets = dict(db.execute("SELECT sha256, size FROM assets").fetchall())
        used = {sha for column in ASSET_COLUMNS for sha, in db.execute(
            f"SELECT {column.split('.')[1]} FROM {column.split('.')[0]} WHERE {column.split('.')[1]} IS NOT NULL")}
    for sha, size in assets.items():
        blob = (atlas / "blobs" / sha[:2] / sha).read_bytes()
        assert len(blob) == size and hashlib.sha256(blob).hexdigest() == sha
    assert {path.name for path in (atlas / "blobs").glob("*/*")} == set(assets) == used
    assert not any((atlas / "tmp").iterdir())


def rendered(done: subprocess.CompletedProcess) -> int:
    """The count in the closing line, "N images rendered into ..."."""
    return int(re.search(r"(\d+) images rendered", done.stderr).group(1))


def last_progress(atlas: Path) -> dict:
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True) as db:
        return json.loads(db.execute("SELECT progress FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0])


def as_in_a_terminal() -> None:
    """Give the child SIGINT's default disposition, as a terminal's foreground job has. A test run started in the
    background of a non-interactive shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt:
    that made the Ctrl-C case pass or fail with how pytest itself was launched."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_midway(atlas: Path, sig: signal.Signals) -> subprocess.CompletedProcess:
    """Stop a FIRST_LAYER run with ``sig`` once its first batch is saved, three batches before its end."""
    proc = subprocess.Popen([*ATLASCOPE, "precompute", "tinyvision", "--atlas", str(atlas), *FIRST_LAYER],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_in_a_terminal)
    deadline = time.time() + 300
    while count_images(atlas) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "precompute finished before it could be interrupted"
    proc.send_signal(sig)
    return finish(proc, timeout=60)


def finish(proc: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    out, errors = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, errors)


def test_precompute_writes_every_planned_image(atlas_dir: Path):
    found = images(atlas_dir)
    expected = {(layer, unit, kind) for layer in ("conv1", "conv2", "conv4") for unit in range(8)
                for kind in ("channel", "neuron")}
    assert {(layer, unit, kind) for layer, unit, kind, _ in found} == expected
    assert_consistent(atlas_dir)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_run_resumes_to_the_same_atlas(atlas_dir: Path, tmp_path: Path, sig: signal.Signals):
    atlas = tmp_path / "atlas"
    stopped = interrupt_midway(atlas, sig)
    if sig == signal.SIGINT:
        assert stopped.returncode == 130 and "run the same command again" in stopped.stderr.lower()
    uninterrupted = {image for image in images(atlas_dir) if image[0] == "conv1"}
    partial = images(atlas)
    assert 0 < len(partial) < len(uninterrupted) == 16
    progress = last_progress(atlas)  # committed with every batch: what a server shows for a stopped job
    assert progress["stage"] == "render" and progress["done"] == len(partial) and progress["todo"] == 16

    resumed = atlascope("precompute", "tinyvision", "--atlas", str(atlas), *FIRST_LAYER)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(partial)} already in" in resumed.stderr  # only the missing images were rendered
    assert images(atlas) == uninterrupted  # same units, same asset hashes as the uninterrupted run
    assert_consistent(atlas)


def test_rerun_of_a_complete_atlas_renders_nothing(atlas_dir: Path, tmp_path: Path):
    atlas = tmp_path / "atlas"  # a copy: other tests (other pytest-xdist workers) read atlas_dir meanwhile
    shutil.copytree(atlas_dir, atlas)
    again = atlascope("precompute", "tinyvision", "--atlas", str(atlas), *SHORT_PRECOMPUTE)
    assert again.returncode == 0, again.stderr
    assert "0 to render" in again.stderr
    assert images(atlas) == images(atlas_dir) and len(images(atlas)) == 48


@pytest.mark.parametrize("args, message", [
    (["nosuchmodel"], "unknown model 'nosuchmodel'"),
    (["tinyvision", "--layers", "conv9"], "has no layer 'conv9'"),
    (["tinyvision", "--units", "0-500"], "unit 500 out of range"),
    (["tinyvision", "--units", "7-3"], "bad unit range"),
    (["tinyvision", "--units", "a"], "bad unit selection"),
    (["tinyvision", "--objectives", "deepdream"], "unknown objective"),
    (["tinyvision", "--steps", "0"], "steps"),
    (["tinyvision", "--precision", "float16"], "--precision float16: choose from float32, bfloat16"),
])
def test_bad_input_fails_clearly_and_writes_nothing(tmp_path: Path, args: list[str], message: str):
    atlas = tmp_path / "atlas"
    done = atlascope("precompute", *args, "--atlas", str(atlas))
    assert done.returncode == 2
    assert message in " ".join(done.stderr.split())
    assert not atlas.exists()


def test_bfloat16_renders_record_their_precision(tmp_path: Path):
    atlas = tmp_path / "atlas"
    done = atlascope("precompute", "tinyvision", "--atlas", str(atlas), *TINY, "--units", "0-3", "--precision",
                     "bfloat16")
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True) as db:
        made = db.execute("SELECT json_extract(params, '$.precision'), json_extract(params, '$.float32_steps') "
                          "FROM unit_images").fetchall()
    assert made == [("bfloat16", "the last 2")] * 4


def test_models_lists_the_registry():
    listed = json.loads(atlascope("models", "--json").stdout)
    tiny = next(m for m in listed if m["slug"] == "tinyvision")
    assert tiny["kind"] == "vision" and tiny["units"] == 320
    assert [l["name"] for l in tiny["layers"]] == ["conv1", "conv2", "conv3", "conv4"]
    assert "tinyvision.pt" in tiny["source"]


def test_force_replaces_only_the_selection(atlas_dir: Path, tmp_path: Path):
    import shutil

    atlas = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas)
    before = images(atlas)
    done = atlascope("precompute", "tinyvision", "--atlas", str(atlas), "--layers", "conv1", "--units", "0-3",
                     "--objectives", "channel", "--steps", "8", "--batch-size", "4", "--dataset", str(SMALL_DATASET),
                     "--device", "cpu", "--force")
    assert done.returncode == 0, done.stderr
    after = images(atlas)
    changed = {(layer, unit, kind) for layer, unit, kind, _ in after - before}
    assert changed == {("conv1", unit, "channel") for unit in range(4)} and len(after) == len(before)
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True) as db:
        steps = db.execute("SELECT json_extract(params, '$.steps') FROM unit_images i JOIN units u ON u.id = i.unit_id "
                           "JOIN layers l ON l.id = u.layer_id WHERE l.name = 'conv1' AND i.kind = 'channel' "
                           "AND u.[index] < 4").fetchall()
    assert steps == [(8,)] * 4
    replaced = {sha for *_, sha in before - after}
    assert replaced and not any((atlas / "blobs" / sha[:2] / sha).exists() for sha in replaced)
    assert_consistent(atlas)  # the replaced images' asset rows went with their blobs


def test_concurrent_runs_take_turns_and_count_what_they_did(tmp_path: Path):
    atlas = tmp_path / "atlas"
    command = [*ATLASCOPE, "precompute", "tinyvision", "--atlas", str(atlas), *TINY, "--units", "0-7"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    done = [finish(proc, timeout=300) for proc in procs]
    assert [d.returncode for d in done] == [0, 0], [d.stderr for d in done]
    planned = {("conv1", unit, "channel") for unit in range(8)}
    assert {(layer, unit, kind) for layer, unit, kind, _ in images(atlas)} == planned
    assert sum(rendered(d) for d in done) == 8
    assert_consistent(atlas)


def test_a_second_run_waits_for_the_writer(tmp_path: Path):
    atlas = tmp_path / "atlas"
    atlas.mkdir()
    held = os.open(atlas, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # what a running precompute holds
    log = tmp_path / "stderr"
    try:
        with log.open("w") as err:
            proc = subprocess.Popen([*ATLASCOPE, "precompute", "tinyvision", "--atlas", str(atlas), *TINY, "--units",
                                     "0"], stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 120
        while "waiting for another" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"waiting for another atlascope precompute writing to {atlas}" in log.read_text()
        assert proc.poll() is None and not any(atlas.iterdir())  # waits, and writes nothing meanwhile
    finally:
        os.close(held)
    assert proc.wait(timeout=300) == 0, log.read_text()
    assert "1 images rendered" in log.read_text() and len(images(atlas)) == 1


def test_counts_are_images_and_a_kept_image_stays(tmp_path: Path):
    atlas = tmp_path / "atlas"
    one = atlascope("precompute", "tinyvision", "--atlas", str(atlas), *TINY, "--units", "0")
    assert one.returncode == 0, one.stderr
    kept = images(atlas)
    more = atlascope("precompute", "tinyvision", "--atlas", str(atlas), *TINY, "--units", "0-3")
    assert more.returncode == 0, more.stderr
    assert "4 images planned, 1 already in" in more.stderr and "3 to render" in more.stderr
    assert rendered(more) == 3 and kept < images(atlas) and len(images(atlas)) == 4
    assert last_progress(atlas) == {"stage": "done", "planned": 4, "kept": 1, "todo": 3, "done": 3, "current": None,
                                    "stage_items": 1, "stage_done": 1, "counted": True}  # the last stage's own items


def test_missing_and_damaged_blobs_are_rendered_again(atlas_dir: Path, tmp_path: Path):
    atlas = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas)
    blobs = {unit: atlas / "blobs" / sha[:2] / sha for layer, unit, kind, sha in images(atlas)
             if layer == "conv1" and kind == "channel"}
    blobs[0].unlink()
    blobs[1].write_bytes(blobs[1].read_bytes()[:100])
    blobs[2].write_bytes(bytes(len(blobs[2].read_bytes())))  # the right size, the wrong bytes
    done = atlascope("precompute", "tinyvision", "--atlas", str(atlas), "--layers", "conv1", "--units", "0-3",
                     "--objectives", "channel", "--steps", "128", "--batch-size", "4", "--dataset", str(SMALL_DATASET),
                     "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "4 images planned, 1 already in" in done.stderr and rendered(done) == 3
    assert images(atlas) == images(atlas_dir)  # renders are deterministic: the same hashes as before the damage
    assert_consistent(atlas)


def test_a_version_1_atlas_is_upgraded_in_place(atlas_dir: Path, tmp_path: Path):
    atlas = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas)
    with sqlite3.connect(atlas / "atlas.db") as db:
        db.execute("ALTER TABLE runs DROP COLUMN progress")
        db.execute("DROP TABLE layer_images")  # version 4's
        db.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    with pytest.raises(AtlasError, match="format version 1.*precompute.*upgrades it in place"):
        Atlas.open_readonly(atlas)
    done = atlascope("precompute", "tinyvision", "--atlas", str(atlas), *TINY, "--units", "0-3")
    assert done.returncode == 0, done.stderr
    assert "4 already in" in done.stderr and images(atlas) == images(atlas_dir)
    Atlas.open_readonly(atlas).engine.dispose()
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone() == (str(FORMAT_VERSION),)
        progress = [json.loads(p) for p, in db.execute("SELECT progress FROM runs ORDER BY id")]
    assert progress[0] == {} and progress[-1]["stage"] == "done"  # runs of before the upgrade have no progress


# The tables version 3 changed, as version 2 made them (and without version 4's)
VERSION_2_TABLES = [
    "DROP TABLE layer_images",
    "DROP TABLE edges", "DROP TABLE circuit_nodes", "DROP TABLE circuits",
    "CREATE TABLE circuits (id INTEGER NOT NULL, model_id INTEGER NOT NULL, slug VARCHAR(128) NOT NULL, task "
    "VARCHAR(128) NOT NULL, target_loss FLOAT NOT NULL, loss FLOAT NOT NULL, n_nodes INTEGER NOT NULL, n_edges INTEGER "
    "NOT NULL, params JSON NOT NULL, graph_sha256 VARCHAR(64), PRIMARY KEY (id), UNIQUE (model_id, slug), FOREIGN "
    "KEY(model_id) REFERENCES models (id), FOREIGN KEY(graph_sha256) REFERENCES assets (sha256))",
    "CREATE TABLE circuit_nodes (circuit_id INTEGER NOT NULL, unit_id INTEGER NOT NULL, score FLOAT, PRIMARY KEY "
    "(circuit_id, unit_id), FOREIGN KEY(circuit_id) REFERENCES circuits (id), FOREIGN KEY(unit_id) REFERENCES units "
    "(id))",
    "CREATE TABLE edges (id INTEGER NOT NULL, src_unit_id INTEGER NOT NULL, dst_unit_id INTEGER NOT NULL, kind "
    "VARCHAR(64) NOT NULL, weight FLOAT NOT NULL, asset_sha256 VARCHAR(64), PRIMARY KEY (id), UNIQUE (src_unit_id, "
    "dst_unit_id, kind), FOREIGN KEY(src_unit_id) REFERENCES units (id), FOREIGN KEY(dst_unit_id) REFERENCES units "
    "(id), FOREIGN KEY(asset_sha256) REFERENCES assets (sha256))",
    "INSERT INTO edges (src_unit_id, dst_unit_id, kind, weight) VALUES (1, 2, 'weight', 0.5), (2, 3, 'weight', -1.5)",
    "UPDATE meta SET value = '2' WHERE key = 'format_version'",
]


def test_a_version_2_atlas_keeps_its_edges_and_gains_circuit_edges(atlas_dir: Path, tmp_path: Path):
    atlas = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas)
    with sqlite3.connect(atlas / "atlas.db") as db:
        for statement in VERSION_2_TABLES:
            db.execute(statement)
    done = atlascope("precompute", "tinyvision", "--atlas", str(atlas), *TINY, "--units", "0-3")
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone() == (str(FORMAT_VERSION),)
        edges = db.execute("SELECT src_unit_id, dst_unit_id, kind, weight, circuit_id FROM edges ORDER BY id").fetchall()
        # the old rows as they were; then the weights that read conv1, which a run of conv1 alone now saves
        assert edges[:2] == [(1, 2, "weight", 0.5, None), (2, 3, "weight", -1.5, None)]
        assert all(edge[4] is None for edge in edges)
        columns = {table: [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
                   for table in ("edges", "circuits", "layer_images")}
        indexes = {row[1] for row in db.execute("PRAGMA index_list(edges)")}
    db = sqlite3.connect(atlas / "atlas.db")
    with pytest.raises(sqlite3.IntegrityError):  # the model's edges stay unique
        db.execute("INSERT INTO edges (src_unit_id, dst_unit_id, kind, weight) VALUES (1, 2, 'weight', 1.0)")
    db.close()
    assert {table: [c.name for c in Base.metadata.tables[table].columns] for table in columns} == columns
    assert {index.name for index in Base.metadata.tables["edges"].indexes} <= indexes


def test_leftovers_are_collected_before_a_run(atlas_dir: Path, tmp_path: Path):
    atlas = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas)
    for leave in (orphan_blob, unreferenced_asset, tmp_file):
        leave(atlas)
    done = atlascope("precompute", "tinyvision", "--atlas", str(atlas), *TINY, "--units", "0-3")
    assert done.returncode == 0, done.stderr
    assert images(atlas) == images(atlas_dir)
    assert_consistent(atlas)


def test_a_commit_cut_short_by_kill_9_is_rolled_back_by_the_next_run(atlas_dir: Path, tmp_path: Path):
    """Readers cannot roll back a hot journal (the server says so with a 503); the next writer does, first thing."""
    atlas = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas)
    killed_mid_commit(atlas)
    done = atlascope("precompute", "tinyvision", "--atlas", str(atlas), *TINY, "--units", "0-3")
    assert done.returncode == 0, done.stderr
    assert not (atlas / "atlas.db-journal").exists()
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True) as db:
        assert db.execute("SELECT count(*) FROM units WHERE label = 'half-written'").fetchone() == (0,)
    assert images(atlas) == images(atlas_dir)
    assert_consistent(atlas)
