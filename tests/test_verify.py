"""`atlascope verify`: passes a sound atlas without writing to it, names each kind of damage with where it is, keeps
quiet about a running job's unfinished work, and needs no torch."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from store.verify import verify_atlas
from tests.conftest import ATLASCOPE, SMALL_DATASET, atlascope
from tests.damage import (broken_reference, damaged_blob, foreign_index, garbage_index, missing_blob, orphan_blob,
                          snapshot, tmp_file, unreferenced_asset)
from tests.test_cli import NO_TORCH


def asset_rows(atlas: Path) -> int:
    """How many assets the index lists, read with sqlite3 alone (the count verify must report for a sound atlas)."""
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*) FROM assets").fetchone()[0]


DAMAGE: dict[str, tuple[Callable[[Path], str], str]] = {
    "missing-blob": (missing_blob, "missing blob"),
    "damaged-blob": (damaged_blob, "damaged blob"),
    "orphan-blob": (orphan_blob, "orphan blob"),
    "unreferenced-asset": (unreferenced_asset, "unreferenced asset"),
    "tmp-file": (tmp_file, "leftover temporary file"),
    "broken-reference": (broken_reference, "broken reference"),
    "garbage-index": (garbage_index, "damaged index"),
    "foreign-index": (foreign_index, "not an atlas index"),
}


def test_a_sound_atlas_passes_and_is_not_written(atlas_dir: Path):
    before = snapshot(atlas_dir)
    done = atlascope("verify", "--atlas", str(atlas_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    n = asset_rows(atlas_dir)
    assert n == sum(1 for blob in (atlas_dir / "blobs").rglob("*") if blob.is_file())
    assert done.stdout.strip() == f"ok: {n} assets, {n} blobs checked"
    assert snapshot(atlas_dir) == before


@pytest.mark.parametrize("damage", DAMAGE)
def test_each_kind_of_damage_is_named_with_where_it_is(atlas_dir: Path, tmp_path: Path, damage: str):
    atlas = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas)
    harm, what = DAMAGE[damage]
    where = harm(atlas)
    done = atlascope("verify", "--atlas", str(atlas))
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert any(line.startswith(f"{what}: ") and where in line for line in lines), lines
    assert not any(line.startswith("ok") for line in lines)


def test_json_lists_the_problems(atlas_dir: Path, tmp_path: Path):
    atlas = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas)
    where = missing_blob(atlas)
    report = json.loads(atlascope("verify", "--atlas", str(atlas), "--json").stdout)
    assert report["ok"] is False and report["assets"] == asset_rows(atlas) and report["blobs"] == asset_rows(atlas) - 1
    assert [(p["what"], p["where"]) for p in report["problems"]] == [("missing blob", where)]


@pytest.mark.parametrize("make", [False, True], ids=["no-directory", "no-index"])
def test_no_atlas_is_an_error(tmp_path: Path, make: bool):
    atlas = tmp_path / "atlas"
    if make:
        atlas.mkdir()
    done = atlascope("verify", "--atlas", str(atlas))
    assert done.returncode == 2 and done.stderr.startswith("error: no atlas at"), done.stderr


def test_verify_without_torch(atlas_dir: Path):
    done = subprocess.run([*NO_TORCH, "verify", "--atlas", str(atlas_dir)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: ")


def test_verify_while_a_job_writes(atlas_dir: Path, tmp_path: Path):
    atlas = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas)
    job = subprocess.Popen([*ATLASCOPE, "precompute", "tinyvision", "--atlas", str(atlas), "--layers", "conv3",
                            "--units", "0-7", "--steps", "8", "--batch-size", "2", "--dataset", str(SMALL_DATASET),
                            "--device", "cpu"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    before, reports = asset_rows(atlas), []
    while job.poll() is None:
        reports.append(verify_atlas(atlas))
        time.sleep(0.05)
    assert job.wait() == 0, job.stderr.read()
    reports.append(verify_atlas(atlas))
    assert [r.lines() for r in reports if r.problems] == []
    assert any(r.writer_active for r in reports) and not reports[-1].writer_active
    assert reports[-1].assets == asset_rows(atlas) >= before + 8  # conv3's 8 feature visualisations at least
