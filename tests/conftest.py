"""Shared fixtures: a real atlas made by a real (short) precompute of the embedded organism, and the real server
serving it over HTTP from a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ATLASCOPE = [sys.executable, "-m", "precompute.cli"]
# Small enough for CI on two cores, big enough to leave some units of every layer unrendered.
SHORT_PRECOMPUTE = ["--layers", "conv1,conv2,conv4", "--units", "0-7", "--steps", "128", "--objectives",
                    "channel,neuron", "--batch-size", "4", "--device", "cpu"]


def atlascope(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*ATLASCOPE, *args], capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="session")
def atlas_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    atlas = tmp_path_factory.mktemp("atlas")
    done = atlascope("precompute", "tinyvision", "--atlas", str(atlas), *SHORT_PRECOMPUTE)
    assert done.returncode == 0, done.stderr
    return atlas


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(atlas_dir: Path):
    port = free_port()
    proc = subprocess.Popen([*ATLASCOPE, "serve", "--atlas", str(atlas_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stdout.read().decode()}")
            try:
                if httpx.get(f"{url}/-/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not answer /-/health within 20 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
