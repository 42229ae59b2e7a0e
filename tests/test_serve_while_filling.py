"""The server reads an atlas while a real precompute fills it: the index shows the job's progress, units not rendered
yet say so and refresh themselves (in a real Chromium, the image appears without a click), and every commit shows up
without restarting the server."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ATLASCOPE, CHROMIUM, SMALL_DATASET, serving

SLOW_PRECOMPUTE = ["--layers", "conv1", "--units", "0-7", "--objectives", "channel", "--steps", "256",
                   "--batch-size", "2", "--dataset", str(SMALL_DATASET), "--device", "cpu"]  # four commits, seconds apart: the server starts in time


def has_model(atlas: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM units").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def poll(get, until, seconds: float = 240):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = get()
        if until(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting; last value: {value!r}")


def browser_page(request: pytest.FixtureRequest):
    """Chromium's page where it can run, else None: the HTTP half of the test stands on its own."""
    try:
        return request.getfixturevalue("page") if CHROMIUM.exists() else None
    except pytest.skip.Exception:
        return None


def test_pages_follow_the_job(tmp_path: Path, request: pytest.FixtureRequest):
    atlas = tmp_path / "atlas"
    job = subprocess.Popen([*ATLASCOPE, "precompute", "tinyvision", "--atlas", str(atlas), *SLOW_PRECOMPUTE],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        poll(lambda: has_model(atlas), bool)
        with serving(atlas, "--workers", "1") as url, httpx.Client(base_url=url, timeout=30) as client:
            index = poll(lambda: client.get("/.json").json(), lambda i: (i["models"][0]["job"] or {}).get("todo"))
            job_seen = index["models"][0]["job"]
            assert index["writer_active"] and job_seen["state"] == "running" and job_seen["todo"] == 8
            assert "precompute running" in client.get("/").text

            assert client.get("/models/tinyvision/conv1/7.json").json()["rendered"] is False  # renders come in order
            html = client.get("/models/tinyvision/conv1/7").text
            assert "Not rendered yet" in html and "filling this atlas right now" in html
            assert '<meta http-equiv="refresh"' in html
            browser = browser_page(request)
            if browser is not None:  # the page reloads itself until the job has rendered the unit
                browser.goto(url + "/models/tinyvision/conv1/7", wait_until="load")
                assert browser.locator(".unit-image img").count() == 0
                browser.wait_for_function("() => document.querySelector('.unit-image img')?.naturalWidth > 0",
                                          timeout=240_000)

            assert job.wait(timeout=240) == 0, job.stderr.read()
            index = client.get("/.json").json()
            assert index["models"][0]["job"] is None and index["models"][0]["n_rendered"] == 8
            finished = client.get("/models/tinyvision/conv1/7")
            assert "Not rendered yet" not in finished.text and 'http-equiv="refresh"' not in finished.text
            runs = client.get("/models/tinyvision.json").json()["runs"]
            assert runs[-1]["progress"]["state"] == "finished" and runs[-1]["progress"]["done"] == 8
    finally:
        if job.poll() is None:
            job.terminate()
            job.wait(timeout=30)
