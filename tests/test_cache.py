"""Conditional and cached responses: ETags and 304s, gzip, HEAD, and that a commit to the atlas is seen at once.

In-process (TestClient) on a copy of the real precomputed atlas, so the test can commit to it like a job would.
"""

from __future__ import annotations

import gzip
import shutil
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app


@pytest.fixture()
def atlas_copy(atlas_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "atlas"
    shutil.copytree(atlas_dir, copy)
    return copy


@pytest.fixture(params=[64, 0], ids=["cached", "uncached"])
def client(atlas_copy: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ATLASCOPE_CACHE_MB", str(request.param))
    with TestClient(create_app(atlas_copy)) as client:
        yield client


def first_unit(client: TestClient) -> dict:
    layer = client.get("/models/tinyvision/conv1.json").json()
    return next(u for u in layer["units"] if u["image"])


def commit(atlas: Path, sql: str, *args) -> None:
    """Write to the index the way the job does: one transaction in rollback-journal mode."""
    with sqlite3.connect(atlas / "atlas.db") as db:
        db.execute(sql, args)


def test_pages_answer_if_none_match_with_304(client: TestClient):
    unit = first_unit(client)
    for url in (unit["url"], unit["json_url"], "/", "/.json", "/models/tinyvision/conv1"):
        first = client.get(url)
        etag = first.headers["etag"]
        assert first.status_code == 200 and etag.startswith('"') and first.headers["cache-control"] == "no-cache"
        again = client.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        assert client.get(url, headers={"If-None-Match": f'W/{etag}, "other"'}).status_code == 304
        assert client.get(url, headers={"If-None-Match": '"stale"'}).status_code == 200


def test_large_pages_are_gzipped_only_for_clients_that_ask(client: TestClient):
    url = "/models/tinyvision/conv4.json"  # 128 units: tens of KB
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.headers["vary"] == "Accept-Encoding"
    raw = client.stream("GET", url, headers={"Accept-Encoding": "gzip"})
    with raw as response:
        body = b"".join(response.iter_raw())
        assert response.headers["content-encoding"] == "gzip"
        assert int(response.headers["content-length"]) == len(body) < len(plain.content) / 3
        assert response.headers["etag"] == plain.headers["etag"][:-1] + '-gz"'
    assert gzip.decompress(body) == plain.content
    refused = client.get(url, headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers
    revalidated = client.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": plain.headers["etag"]})
    assert revalidated.status_code == 304  # either variant's ETag revalidates


def test_head_matches_get_everywhere(client: TestClient):
    unit = first_unit(client)
    for url in (unit["url"], unit["json_url"], unit["image"]["url"], "/-/health", "/static/atlas.css", "/docs",
                "/models/nope", "/models/tinyvision/conv1/" + "9" * 5000):
        get, head = client.get(url), client.head(url)
        assert head.status_code == get.status_code, url
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"], url


def test_a_commit_to_the_atlas_is_served_at_once(client: TestClient, atlas_copy: Path):
    unit = first_unit(client)
    before = client.get(unit["json_url"])
    assert before.json()["label"] is None
    commit(atlas_copy, "UPDATE units SET label = ? WHERE [index] = ? AND layer_id = "
                       "(SELECT id FROM layers WHERE name = 'conv1')", "horizontal edges", unit["index"])
    after = client.get(unit["json_url"], headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200 and after.json()["label"] == "horizontal edges"
    assert after.headers["etag"] != before.headers["etag"]
    assert "horizontal edges" in client.get(unit["url"]).text


def test_assets_keep_their_hash_as_etag(client: TestClient):
    image = first_unit(client)["image"]
    response = client.get(image["url"], headers={"Accept-Encoding": "gzip"})
    assert response.headers["etag"] == f'"{image["sha256"]}"'
    assert "content-encoding" not in response.headers  # PNGs are compressed already
    assert client.get(image["url"], headers={"If-None-Match": "*"}).status_code == 304
