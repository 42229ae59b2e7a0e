"""The `atlascope` command on a base install: listing models and serving need no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

NO_TORCH = [sys.executable, str(Path(__file__).with_name("no_torch.py")), "-m", "precompute.cli"]


def test_models_without_torch():
    done = subprocess.run([*NO_TORCH, "models", "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [m["slug"] for m in json.loads(done.stdout)] == ["tinyvision"]


def test_serve_without_torch_reports_a_missing_atlas(tmp_path: Path):
    done = subprocess.run([*NO_TORCH, "serve", "--atlas", str(tmp_path / "nowhere")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "no atlas at" in done.stderr and "atlascope precompute" in " ".join(done.stderr.split())


def test_serve_refuses_a_file_that_is_not_an_atlas(tmp_path: Path):
    (tmp_path / "atlas.db").write_bytes(b"not sqlite at all" * 100)
    done = subprocess.run([*NO_TORCH, "serve", "--atlas", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "is not an atlas index" in done.stderr


def test_precompute_without_torch_says_what_to_install(tmp_path: Path):
    done = subprocess.run([*NO_TORCH, "precompute", "tinyvision", "--atlas", str(tmp_path / "a")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "atlascope[precompute]" in done.stderr
