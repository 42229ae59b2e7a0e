"""The precompute job on the embedded organism: what it writes, that it resumes after Ctrl-C or kill -9 to the very
same assets, and that bad input fails clearly without touching the atlas."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ATLASCOPE, SHORT_PRECOMPUTE, atlascope


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


def assert_consistent(atlas: Path) -> None:
    """Every indexed asset is a complete blob whose bytes hash to its name; no temporary files remain."""
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True) as db:
        for sha, size in db.execute("SELECT sha256, size FROM assets"):
            blob = (atlas / "blobs" / sha[:2] / sha).read_bytes()
            assert len(blob) == size and hashlib.sha256(blob).hexdigest() == sha
    assert not any((atlas / "tmp").iterdir())


def interrupt_midway(atlas: Path, sig: signal.Signals) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([*ATLASCOPE, "precompute", "tinyvision", "--atlas", str(atlas), *SHORT_PRECOMPUTE],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while count_images(atlas) < 8 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "precompute finished before it could be interrupted"
    proc.send_signal(sig)
    out, errors = proc.communicate(timeout=60)
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
    partial = images(atlas)
    assert 0 < len(partial) < len(images(atlas_dir))

    resumed = atlascope("precompute", "tinyvision", "--atlas", str(atlas), *SHORT_PRECOMPUTE)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(partial)} already in" in resumed.stderr  # only the missing images were rendered
    assert images(atlas) == images(atlas_dir)  # same units, same asset hashes as the uninterrupted run
    assert_consistent(atlas)


def test_rerun_of_a_complete_atlas_renders_nothing(atlas_dir: Path):
    before = images(atlas_dir)
    again = atlascope("precompute", "tinyvision", "--atlas", str(atlas_dir), *SHORT_PRECOMPUTE)
    assert again.returncode == 0, again.stderr
    assert "0 to render" in again.stderr
    assert images(atlas_dir) == before and len(before) == 48


@pytest.mark.parametrize("args, message", [
    (["nosuchmodel"], "unknown model 'nosuchmodel'"),
    (["tinyvision", "--layers", "conv9"], "has no layer 'conv9'"),
    (["tinyvision", "--units", "0-500"], "unit 500 out of range"),
    (["tinyvision", "--units", "7-3"], "bad unit range"),
    (["tinyvision", "--units", "a"], "bad unit selection"),
    (["tinyvision", "--objectives", "deepdream"], "unknown objective"),
    (["tinyvision", "--steps", "0"], "steps"),
])
def test_bad_input_fails_clearly_and_writes_nothing(tmp_path: Path, args: list[str], message: str):
    atlas = tmp_path / "atlas"
    done = atlascope("precompute", *args, "--atlas", str(atlas))
    assert done.returncode == 2
    assert message in " ".join(done.stderr.split())
    assert not atlas.exists()


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
                     "--objectives", "channel", "--steps", "8", "--batch-size", "4", "--device", "cpu", "--force")
    assert done.returncode == 0, done.stderr
    after = images(atlas)
    changed = {(layer, unit, kind) for layer, unit, kind, _ in after - before}
    assert changed == {("conv1", unit, "channel") for unit in range(4)} and len(after) == len(before)
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True) as db:
        steps = db.execute("SELECT json_extract(params, '$.steps') FROM unit_images i JOIN units u ON u.id = i.unit_id "
                           "JOIN layers l ON l.id = u.layer_id WHERE l.name = 'conv1' AND i.kind = 'channel' "
                           "AND u.[index] < 4").fetchall()
    assert steps == [(8,)] * 4
    assert_consistent(atlas)
