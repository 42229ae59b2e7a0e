"""Shared fixtures: a real atlas made by a real (short) precompute of the embedded organism, and the real server
serving it over HTTP from a subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx
import pytest
from filelock import FileLock

ATLASCOPE = [sys.executable, "-m", "precompute.cli"]
if "PYTEST_XDIST_WORKER" in os.environ:  # `make test`'s workers, one a core: torch in each (and in the precomputes
    os.environ["OMP_NUM_THREADS"] = "1"  # they start) takes one thread, since threads spinning for a core another
    # worker holds slowed a short precompute tenfold


def write_class_folders(root: Path, per_class: int) -> Path:
    """A dataset folder as torchvision's ImageFolder lays it out: ``per_class`` held-out TinyVision images (PNG) in
    one subfolder per class. Deterministic bytes; no torch needed."""
    from PIL import Image

    from precompute.datasets.patterns import CLASSES, make_batch

    batch = make_batch(per_class * len(CLASSES), "test", seed=7)
    for index, (image, label) in enumerate(zip(batch.images, batch.labels)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:03d}.png")
    return root


# The tests' dataset: 68 images, so a precompute's examples pass and the images it stores stay small (the built-in
# 2,040 are tested in test_vision_precompute.py). Made once per test session, removed at its end.
SMALL_DATASET = write_class_folders(Path(tempfile.mkdtemp(prefix="atlascope-test-dataset-")), per_class=4)


def short_precompute(layers: str = "conv1,conv2,conv4") -> list[str]:
    """The tests' precompute options. Small enough for CI on two cores, big enough to leave some units of every layer
    unrendered. Render batches are per layer and seeded, so fewer ``layers`` render the very same images of them."""
    return ["--layers", layers, "--units", "0-7", "--steps", "128", "--objectives", "channel,neuron", "--batch-size",
            "4", "--dataset", str(SMALL_DATASET), "--device", "cpu"]


SHORT_PRECOMPUTE = short_precompute()


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SMALL_DATASET, ignore_errors=True)


def atlascope(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*ATLASCOPE, *args], capture_output=True, text=True, **kwargs)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The directory ``build(path)`` fills, made once per test run: under pytest-xdist (``make test`` runs two
    workers) by whichever worker asks first while the others wait, in the base directory all workers share, so an
    expensive session fixture costs one build, not one a worker."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        path = tmp_path_factory.mktemp(name)
        build(path)
        return path
    shared = tmp_path_factory.getbasetemp().parent
    path, built = shared / name, shared / f"{name}.built"
    with FileLock(shared / f"{name}.lock"):
        if not built.exists():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            build(path)
            built.touch()
    return path


def precompute_short(atlas: Path) -> None:
    done = atlascope("precompute", "tinyvision", "--atlas", str(atlas), *SHORT_PRECOMPUTE)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def atlas_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TinyVision's short precompute: read-only for every test (a test that changes an atlas copies this one)."""
    return built_once(tmp_path_factory, "atlas", precompute_short)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(atlas: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[str]:
    """Run ``atlascope serve`` on ``atlas`` with those arguments and environment on a free port, for the block.

    The server writes to a log file rather than a pipe: under load or bad input a server logs a lot, and a full pipe
    that nobody reads would freeze it. The log's tail goes into the error if the server exits or never answers; pass
    ``log`` to keep it and read what the server said.
    """
    port = free_port()
    log_dir = None if log else Path(tempfile.mkdtemp(prefix="atlascope-serve-"))
    log = log or log_dir / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*ATLASCOPE, "serve", "--atlas", str(atlas), "--port", str(port), *args],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1", **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # several workers starting on two busy cores
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server {args} exited with {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/-/health", timeout=2).status_code in (200, 503):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {args} did not answer /-/health in 60 s: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_dir:
            shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def live_server(atlas_dir: Path):
    with serving(atlas_dir) as url:
        yield url


@pytest.fixture(scope="session")
def start_server(atlas_dir: Path):
    """A factory: ``with start_server("--workers", "1", env={"ATLASCOPE_CACHE_MB": "0"}) as url:`` serves
    ``atlas_dir`` with those arguments and environment for the block."""
    return partial(serving, atlas_dir)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"
]


@pytest.fixture(scope="module")
def page():
    """A page in Debian's headless Chromium, driven by Playwright (`make test` installs Chromium when it can)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} to drive")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[test])")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser.new_page(viewport={"width": 1280, "height": 900})
        browser.close()
