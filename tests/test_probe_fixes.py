"""What an adversarial probe broke (issue 19), each checked the way the probe broke it: a real multi-worker server
with a real lock holder, a load test of cache-busting query strings, refused runs listed afterwards, bad input that
must fail before anything is written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ATLASCOPE, free_port
from tests.damage import killed_mid_commit

HOLD = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
db.execute("BEGIN EXCLUSIVE")  # what a precompute's commit holds: readers wait, then give up
print("holding", flush=True)
sys.stdin.readline()
"""


@pytest.fixture()
def atlas_copy(atlas_dir: Path, tmp_path: Path) -> Path:
    atlas = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas)
    return atlas


class Server:
    """``atlascope serve`` in a subprocess, logging to a file, so a test can act between its start and its first
    answer (``serving`` in conftest waits for that)."""

    def __init__(self, atlas: Path, log: Path, *args: str):
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([*ATLASCOPE, "serve", "--atlas", str(atlas), "--port",
                                          self.url.rpartition(":")[2], *args], stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "NO_COLOR": "1"})

    def wait_for(self, condition, what: str, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert self.proc.poll() is None, f"the server exited ({self.proc.returncode}): {self.log.read_text()}"
            assert time.monotonic() < deadline, f"no {what} in {seconds} s: {self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(self.url + path, timeout=30)
        except httpx.TransportError:
            return None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def answers(server: Server, path: str, status: int) -> bool:
    response = server.get(path)
    return response is not None and response.status_code == status


def assert_quiet(log: Path) -> None:
    """No traceback and no worker respawned: a line or two from `serve`, however long the atlas was unreadable."""
    text = log.read_text()
    assert "Traceback" not in text and "died" not in text, text[-3000:]
    assert len(text.strip().splitlines()) <= 3, text[-3000:]


# -- item 1: workers that start while the index cannot be read --------------------------------------------------


def test_workers_started_under_a_writers_lock_answer_503_then_serve(atlas_copy: Path, tmp_path: Path):
    """The lock is taken as `serve` says it is serving, so its workers start under it: they answer 503 with
    Retry-After while it is held and serve once it is released, with no worker dying on the way."""
    server = Server(atlas_copy, tmp_path / "serve.log", "--workers", "2")
    holder = None
    try:
        server.wait_for(lambda: "serving" in server.log.read_text(), "'serving' line")
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(atlas_copy / "atlas.db")], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "holding"
        server.wait_for(lambda: answers(server, "/-/health", 503), "503 from a worker under the lock")
        busy = server.get("/.json")
        assert busy.status_code == 503 and busy.headers["Retry-After"], busy.text
        assert "busy" in busy.json()["error"]["message"]
        assert server.get("/-/health").json()["status"] == "busy"
        time.sleep(2)  # held a while longer: no worker gives up and dies meanwhile
        holder.stdin.close()
        holder.wait(timeout=30)
        server.wait_for(lambda: answers(server, "/.json", 200), "200 once the lock is released")
        health = server.get("/-/health").json()
        assert health["status"] == "ok" and health["integrity"] == "ok", health
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        server.stop()
    assert_quiet(server.log)


@pytest.mark.parametrize("when", ["before-start", "as-it-starts"])
def test_workers_serve_503_interrupted_after_a_writer_died_mid_commit(atlas_copy: Path, tmp_path: Path, when: str):
    """A writer killed by kill -9 inside its commit leaves a hot journal that only a writer may roll back: `serve`
    starts anyway, says so in one line, and every worker answers 503 naming the repair."""
    if when == "before-start":
        killed_mid_commit(atlas_copy)
    server = Server(atlas_copy, tmp_path / "serve.log", "--workers", "2")
    try:
        if when == "as-it-starts":
            server.wait_for(lambda: "serving" in server.log.read_text(), "'serving' line")
            killed_mid_commit(atlas_copy)
        server.wait_for(lambda: answers(server, "/-/health", 503), "503 from a worker")
        for _ in range(4):  # several requests, so both workers are likely asked
            page = server.get("/models/tinyvision/conv1/0.json")
            assert page.status_code == 503, page.text
            message = page.json()["error"]["message"]
            assert "killed in the middle of a commit" in message and "atlascope precompute" in message
        assert server.get("/-/health").json()["status"] == "interrupted"
        time.sleep(2)
        assert server.proc.poll() is None
    finally:
        server.stop()
    assert_quiet(server.log)
    if when == "before-start":
        assert "killed in the middle of a commit" in server.log.read_text()
