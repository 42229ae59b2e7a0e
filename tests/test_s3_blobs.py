"""Blobs in object storage, on a real S3 endpoint (moto's server on localhost): a precompute with ``--blobs s3://...``
indexes the very images a local one does and writes no blob files beside its index; `atlascope verify` and the server
read them from the bucket with no flag, as the index says where they are; a later run naming another place, and a
URL naming no store that answers, are refused with exit code 2. And a local atlas keeps today's layout."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from pathlib import Path

import httpx
import pytest

from store import Atlas, AtlasError
from store.blobstore import BLOBS_KEY
from tests.conftest import atlascope, free_port, serving
from tests.test_precompute import TINY, images

boto3 = pytest.importorskip("boto3", reason="the S3 tests need the test extra: pip install -e '.[test]'")
moto_server = pytest.importorskip("moto.server", reason="the S3 tests need the test extra: pip install -e '.[test]'")

BUCKET = "atlas-blobs"
BLOBS_URL = f"s3://{BUCKET}/tiny"
TWO_UNITS = [*TINY, "--units", "0-1"]  # the suite's smallest precompute, cut to two images: the weights stage's
# thousand kernel pictures are what the bucket mostly holds


@pytest.fixture(scope="module")
def s3_env() -> dict[str, str]:
    """The environment a client of the S3 endpoint needs: its URL and (moto's any) credentials."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    bucket(env).create_bucket(Bucket=BUCKET)
    yield env
    server.stop()


def bucket(env: dict[str, str]):
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def run(env: dict[str, str], *args: str):
    return atlascope(*args, env={**os.environ, **env})


@pytest.fixture(scope="module")
def atlases(s3_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same precompute into a local atlas and into one whose blobs go to the bucket."""
    local, remote = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("remote")
    for atlas, extra in ((local, []), (remote, ["--blobs", BLOBS_URL])):
        done = run(s3_env, "precompute", "tinyvision", "--atlas", str(atlas), *TWO_UNITS, *extra)
        assert done.returncode == 0, done.stderr
    return local, remote


def asset_shas(atlas: Path) -> set[str]:
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True) as db:
        return {sha for sha, in db.execute("SELECT sha256 FROM assets")}


def recorded_blobs(atlas: Path) -> str | None:
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (BLOBS_KEY,)).fetchone()
    return row and row[0]


def test_the_index_holds_the_same_images_and_the_bucket_their_blobs(atlases, s3_env):
    local, remote = atlases
    assert images(remote) == images(local) and len(images(local)) == 2
    assert asset_shas(remote) == asset_shas(local)
    assert recorded_blobs(remote) == BLOBS_URL and recorded_blobs(local) is None
    assert not (remote / "blobs").exists() and not any((remote / "tmp").iterdir())
    listed = bucket(s3_env).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="tiny/")
    keys = {item["Key"] for page in listed for item in page.get("Contents", [])}
    assert keys == {f"tiny/{sha[:2]}/{sha}" for sha in asset_shas(local)}


def test_verify_reads_every_blob_from_the_bucket_and_names_a_missing_one(atlases, s3_env):
    """One pass (each reads a thousand objects): every blob but the deleted one is read and found intact."""
    local, remote = atlases
    _, _, _, sha = sorted(images(remote))[0]
    key = f"tiny/{sha[:2]}/{sha}"
    bucket(s3_env).delete_object(Bucket=BUCKET, Key=key)
    try:
        done = run(s3_env, "verify", "--atlas", str(remote), "--json")
        assert done.returncode == 1, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert (report["assets"], report["blobs"]) == (len(asset_shas(local)), len(asset_shas(local)) - 1)
        assert report["problems"] == [{"what": "missing blob", "where": f"s3://{BUCKET}/{key}", "detail":
                                       f"indexed asset of {(local / 'blobs' / sha[:2] / sha).stat().st_size} bytes"}]
    finally:
        bucket(s3_env).put_object(Bucket=BUCKET, Key=key, Body=(local / "blobs" / sha[:2] / sha).read_bytes())


def test_the_server_serves_blobs_from_the_bucket(atlases, s3_env):
    local, remote = atlases
    with serving(remote, "--workers", "1", env=s3_env) as url:
        for _, _, _, sha in images(remote):
            response = httpx.get(f"{url}/assets/{sha}", timeout=30)
            assert response.status_code == 200
            assert response.content == (local / "blobs" / sha[:2] / sha).read_bytes()
        assert httpx.get(f"{url}/assets/{'0' * 64}", timeout=30).status_code == 404


def test_a_url_naming_no_store_is_refused_with_exit_code_2(s3_env, tmp_path: Path):
    url = "s3://no-such-bucket/prefix"
    done = run(s3_env, "precompute", "tinyvision", "--atlas", str(tmp_path), *TWO_UNITS, "--blobs", url)
    assert done.returncode == 2, done.stderr
    assert f"error: blobs at {url}: there is no bucket 'no-such-bucket' (create it first)" in done.stderr
    assert recorded_blobs(tmp_path) is None  # a later run may still choose where its blobs go


# The writer's refusals in process: the CLI turns each into its `error:` line and exit code 2, as above.
@pytest.mark.parametrize("atlas, url, says", [
    ("remote", f"s3://{BUCKET}/other", f"keeps its blobs at {BLOBS_URL}, as its index records; --blobs "
                                       f"s3://{BUCKET}/other names another place"),
    ("local", BLOBS_URL, "keeps its blobs in its blobs/ folder"),
    ("new", "nope://bucket/prefix", "Protocol not known: nope"),
    ("new", "a/folder", "is not a URL such as s3://bucket/prefix"),
])
def test_the_writer_refuses_another_place_or_no_url(atlases, s3_env, monkeypatch, tmp_path, atlas, url, says):
    root = {"local": atlases[0], "remote": atlases[1], "new": tmp_path}[atlas]
    before = recorded_blobs(root) if atlas != "new" else None
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(AtlasError, match=re.escape(says)):
        with Atlas.open_for_writing(root, blobs=url):
            pass
    assert recorded_blobs(root) == before


def test_local_blobs_keep_their_layout(tmp_path: Path):
    data = b"an image"
    with Atlas.open_for_writing(tmp_path) as atlas:
        sha = atlas.put_blob(data)
        assert atlas.blob_path(sha) == tmp_path / "blobs" / sha[:2] / sha
        assert atlas.blob_files() == [tmp_path / "blobs" / sha[:2] / sha]
    assert (tmp_path / "blobs" / sha[:2] / sha).read_bytes() == data
    assert not any((tmp_path / "tmp").iterdir()) and recorded_blobs(tmp_path) is None
