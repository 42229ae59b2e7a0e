"""Health that means it: a damaged index is reported by ``/-/health`` and by every page it breaks, as a clear 503 in
the client's format, never as a plain 500; a healthy one says ok and what it serves."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from tests.conftest import serving
from tests.damage import garbage_table_root, killed_mid_commit


@pytest.fixture()
def damaged(atlas_dir: Path, tmp_path: Path) -> Path:
    atlas = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas)
    garbage_table_root(atlas, "unit_images")
    return atlas


def test_health_of_a_good_atlas(live_server: str):
    health = httpx.get(f"{live_server}/-/health").json()
    assert health["status"] == "ok" and health["integrity"] == "ok" and health["message"] is None
    assert health["models"] == 1 and health["generation"] > 0 and health["writer_active"] is False


def test_damaged_index_gives_503_not_500(damaged: Path):
    client = TestClient(create_app(damaged), raise_server_exceptions=False)
    health = client.get("/-/health")
    assert health.status_code == 503
    assert health.json()["status"] == "damaged" and health.json()["integrity"] != "ok"
    broken = 0
    for url in ("/", "/models/tinyvision", "/models/tinyvision/conv1", "/models/tinyvision/conv1/0"):
        for variant, headers in ((url + ".json" if url != "/" else "/.json", {}), (url, {"Accept": "text/html"})):
            response = client.get(variant, headers=headers)
            assert response.status_code in (200, 503), (variant, response.status_code, response.text[:200])
            if response.status_code == 503:
                broken += 1
                if variant.endswith(".json"):
                    message = response.json()["error"]["message"]
                else:
                    assert response.headers["content-type"].startswith("text/html")
                    message = response.text
                assert "damaged" in message and "atlascope verify" in message, message[:300]
    assert broken >= 4  # every page that reads unit images fails, and says why



def test_serve_warns_about_a_damaged_index_and_serves_what_it_can(damaged: Path, tmp_path: Path):
    log = tmp_path / "serve.log"
    with serving(damaged, "--workers", "1", log=log) as url:
        health = httpx.get(f"{url}/-/health")
        assert health.status_code == 503 and health.json()["status"] == "damaged"
        assert httpx.get(f"{url}/static/atlas.css").status_code == 200
    output = log.read_text()
    assert "warning: the atlas index at" in output and "is damaged" in output and "atlascope verify" in output


def test_a_writer_killed_mid_commit_is_named_as_such(atlas_dir: Path, tmp_path: Path):
    """The job died inside a commit: its hot journal can only be rolled back by a writer, so readers say exactly
    that, and the next precompute repairs the atlas (the job's tests cover the repair)."""
    atlas = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas)
    client = TestClient(create_app(atlas), raise_server_exceptions=False)
    assert client.get("/models/tinyvision/conv1/1.json").status_code == 200
    killed_mid_commit(atlas)
    for url in ("/models/tinyvision/conv1/2.json", "/-/health"):
        response = client.get(url)
        assert response.status_code == 503, (url, response.text)
        assert "killed in the middle of a commit" in response.text and "atlascope precompute" in response.text
    assert client.get("/-/health").json()["status"] == "interrupted"
    started = TestClient(create_app(atlas), raise_server_exceptions=False)  # a worker starting now starts
    assert started.app.state.check.pending.kind == "interrupted"
    response = started.get("/models/tinyvision/conv1/2.json")
    assert response.status_code == 503 and "killed in the middle of a commit" in response.text
