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

from tests.conftest import ATLASCOPE, SMALL_DATASET, free_port
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

    def get(self, path: str, **kwargs) -> httpx.Response | None:
        try:
            return httpx.get(self.url + path, timeout=30, **kwargs)
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


# -- item 2: query strings that would bust the page cache -------------------------------------------------------

# With a build per request (a cache entry each), the worker grew 34 MiB over 1,000 such requests on the 2-core
# machine; with the query cut to what the page reads it grew 0 MiB. How fast they are answered is bench/serve_load.py's
# "unit HTML ?x=N" row, beside the cached pages'.
BUSTING_REQUESTS = 600
BUSTING_CONNECTIONS = 64
HANG_SECONDS = 120  # a request unanswered this long is a hang, not a slow answer


def rss_mib(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024


async def busting_load(url: str, path: str) -> tuple[list[int | str], set[str]]:
    """GET ``path?x=N`` for BUSTING_REQUESTS random N from BUSTING_CONNECTIONS clients, each sending its next request
    when its last is answered. (Not every request queued at once on one pool: httpx then
    spends its time scanning the queue, and the client, not the server, is what is measured.)"""
    import asyncio
    import random

    limits = httpx.Limits(max_connections=BUSTING_CONNECTIONS)
    results: list[int | str] = []
    etags: set[str] = set()
    numbers = iter(random.Random(0).sample(range(10**9), BUSTING_REQUESTS))
    async with httpx.AsyncClient(base_url=url, timeout=HANG_SECONDS, limits=limits) as client:

        async def connection() -> None:
            for n in numbers:
                try:
                    response = await client.get(f"{path}?x={n}&utm_source=probe{n}")
                    results.append(response.status_code)
                    etags.add(response.headers.get("etag", ""))
                except httpx.HTTPError as exc:
                    results.append(type(exc).__name__)

        await asyncio.gather(*(connection() for _ in range(BUSTING_CONNECTIONS)))
    return results, etags


def test_unknown_query_parameters_cost_no_build_and_no_memory(atlas_dir: Path, tmp_path: Path):
    """A thousand URLs of one page that differ only in parameters it does not read are answered from one cache
    entry (one ETag), and the worker's memory does not grow with them."""
    import asyncio

    page = "/models/tinyvision/conv2/0"  # the largest page of the test atlas (about 50 KB)
    server = Server(atlas_dir, tmp_path / "serve.log", "--workers", "1")  # one process, serving itself
    try:
        server.wait_for(lambda: answers(server, page, 200), "first answer")
        before = rss_mib(server.proc.pid)
        results, etags = asyncio.run(busting_load(server.url, page))
        after = rss_mib(server.proc.pid)
        declared = server.get("/models/tinyvision/conv2.json?kind=neuron&x=1&kind=channel").json()
    finally:
        server.stop()
    assert len(results) == BUSTING_REQUESTS, f"{len(results)} of {BUSTING_REQUESTS} answered"
    assert set(results) == {200}, {str(r) for r in results}
    assert len(etags) == 1, f"{len(etags)} different pages for one page"
    assert after - before < 16, f"the worker grew {after - before:.0f} MiB ({before:.0f} -> {after:.0f})"
    assert declared["kind"] == "channel" and declared["url"] == "/models/tinyvision/conv2"  # the last value wins


def test_the_cache_key_is_the_query_a_route_reads(atlas_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """Only the parameters a route declares reach it (and key its cache entry), each once; a route's own bad value is
    still its 400 or 404, and Microscope's technique parameters still steer its redirects."""
    from fastapi.testclient import TestClient

    import server.routes
    from server.app import create_app
    from server.pages.layer import layer_page
    from server.query import CanonicalQuery

    built = []
    monkeypatch.setattr(server.routes, "layer_page", lambda *args, **kwargs: built.append(args) or layer_page(
        *args, **kwargs))
    client = TestClient(create_app(atlas_dir), raise_server_exceptions=False)
    for n in range(5):
        assert client.get(f"/models/tinyvision/conv1.json?page=1&x={n}").status_code == 200
    assert client.get("/models/tinyvision/conv1.json?x=9&page=1").status_code == 200
    assert len(built) == 1
    assert client.get("/models/tinyvision/conv1?thumbnail=bogus&x=1").status_code == 400
    assert client.get("/models/tinyvision/conv1?kind=bogus&x=1").status_code == 404
    jump = client.get("/models/tinyvision/conv1?unit=3&x=1", follow_redirects=False)
    assert jump.status_code == 303 and jump.headers["location"] == "/models/tinyvision/conv1/3"
    assert client.get("/models/tinyvision/conv1/0?page=2&x=1").status_code == 200  # a unit page reads none
    assert client.get("/static/atlas.css?v=1").status_code == 200
    canonical = CanonicalQuery(server.routes.router.routes)
    assert canonical("/models/inceptionv1/mixed4c_0/447", b"x=1&models.op.technique=weights") == \
        b"models.op.technique=weights"  # a Microscope name: its technique picks the section it redirects to
    assert canonical("/models/tinyvision/conv1/0", b"models.op.technique=weights") == b""
    assert canonical("/models/tinyvision/conv1", b"order=desc&x=1&sort=max&page=2") == b"page=2&sort=max&order=desc"


# -- item 3: a refused run writes nothing; a failed one leaves no half-registered model ---------------------------


def test_garbage_weights_are_refused_before_the_atlas_is_made(tmp_path: Path):
    """The probe's run: InceptionV1 with a file that is not a checkpoint. The weights are loaded before the atlas is
    opened, so the new atlas is never made, and the message is one error line with no traceback."""
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(4096))
    new = tmp_path / "new"
    done = subprocess.run([*ATLASCOPE, "precompute", "inceptionv1", "--atlas", str(new), "--weights", str(garbage),
                           "--dataset", str(SMALL_DATASET), "--layers", "conv2d0", "--units", "0", "--steps", "1"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_COLOR": "1"})
    lines = done.stderr.strip().splitlines()  # the dataset's line and the progress bar come first
    assert done.returncode == 2, done.stderr
    assert lines[-1].startswith(f"error: {garbage} is not a torch checkpoint"), done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("error:") == 1, done.stderr
    assert not new.exists()


def runs(atlas: Path) -> list[dict]:
    from sqlalchemy import select

    from store import Atlas
    from store.schema import Run

    with Atlas.open_unchecked(atlas).sessions() as session:
        return [{"id": run.id, "finished": run.finished_at is not None, **run.progress}
                for run in session.scalars(select(Run).order_by(Run.id))]


def index_models(atlas: Path) -> list[str]:
    """The slugs the index page lists, as the server shows them."""
    from fastapi.testclient import TestClient

    from server.app import create_app

    return [model["slug"] for model in TestClient(create_app(atlas)).get("/.json").json()["models"]]


class Failed(Exception):
    pass


def fail_after_start(total: int, todo: int) -> None:
    raise Failed("the disk filled up")  # as anything after the model is registered and the run row committed


def test_a_run_that_fails_after_starting_leaves_no_half_registered_model(atlas_copy: Path, tmp_path: Path):
    """A run that registered a model and saved nothing for it takes the model away again when it fails: the index
    page lists nothing. In an atlas where the model has pages, a failed run is kept and marked interrupted, with
    why and when, and so is the row of a run that was killed: run history reads true."""
    from sqlalchemy import select, update

    from precompute import job
    from precompute.plan import select as select_units
    from precompute.registry import get_model
    from store import Atlas
    from store.schema import INTERRUPTED, INTERRUPTED_AT, Run

    spec = get_model("tinyvision")
    selection = select_units(spec, ["conv1"], [0])
    fresh = tmp_path / "fresh"
    with pytest.raises(Failed):
        job.run(job.Request(spec, fresh, selection), on_plan=fail_after_start)
    assert index_models(fresh) == [] and runs(fresh) == []

    with Atlas.open_for_writing(atlas_copy) as atlas, atlas.sessions.begin() as session:  # as kill -9 leaves a run
        killed = session.scalar(select(Run.id).order_by(Run.id.desc()).limit(1))
        session.execute(update(Run).where(Run.id == killed).values(finished_at=None))
    with pytest.raises(Failed):
        job.run(job.Request(spec, atlas_copy, selection), on_plan=fail_after_start)
    assert index_models(atlas_copy) == ["tinyvision"]
    history = {run["id"]: run for run in runs(atlas_copy)}
    failed = max(history)
    assert history[killed][INTERRUPTED].startswith("killed") and history[killed][INTERRUPTED_AT]
    assert history[failed][INTERRUPTED] == "failed: Failed: the disk filled up" and history[failed][INTERRUPTED_AT]
    assert all(run["finished"] or INTERRUPTED_AT in run for run in history.values())


# -- item 4: late errors, caught before anything is written -----------------------------------------------------


def cli(*args: str, cwd: Path | None = None):
    """``atlascope ARGS`` in this process (torch is imported once for all of them); its result."""
    from typer.testing import CliRunner

    from precompute.cli import app

    old = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        return CliRunner().invoke(app, list(args), env={"NO_COLOR": "1"})
    finally:
        os.chdir(old)


def assert_one_error_line(result, *words: str) -> None:
    text = result.stderr
    assert result.exit_code == 2, (result.exit_code, text, result.exception)
    assert text.startswith("error: ") and len(text.strip().splitlines()) == 1, text
    assert all(word in text for word in words), text


def write_task(path: Path, lines: list[tuple[str, str, str]]) -> Path:
    import json

    path.write_text("".join(json.dumps({"prompt": p, "correct": c, "wrong": w}) + "\n" for p, c, w in lines))
    return path


def test_tasks_checks_candidates_against_the_models_tokenizer_without_torch(tmp_path: Path):
    fruit = write_task(tmp_path / "fruit.jsonl", [("x = ", " banana", " cherry"), ("y = ", " cherry", " banana")])
    no_torch = [sys.executable, str(Path(__file__).with_name("no_torch.py")), "-m", "precompute.cli"]
    done = subprocess.run([*no_torch, "tasks", "--jsonl", str(fruit), "--model", "tinylm-sparse"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 2 and done.stderr.startswith("error: task 'fruit': candidate ' banana' is 4 tokens")
    assert len(done.stderr.strip().splitlines()) == 1 and "tinylm-sparse" in done.stderr, done.stderr
    listed = subprocess.run([*no_torch, "tasks", "--jsonl", str(fruit)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr  # without a model there is no tokenizer to hold them to


@pytest.mark.parametrize("case", ["multi-token candidates", "too few prompts"])
def test_precompute_refuses_a_task_it_cannot_prune_before_writing(tmp_path: Path, case: str):
    if case == "multi-token candidates":
        task = write_task(tmp_path / "fruit.jsonl", [("x = ", " banana", " cherry"), ("y = ", " cherry", " banana")])
        words = ["candidate ' banana' is 4 tokens"]
    else:
        task = write_task(tmp_path / "small.jsonl", [("x = [1", "]", "]]"), ("x = [[1", "]]", "]")])
        words = ["task 'small'", "too few distinct prompts", "give the task more distinct prompts"]
    new = tmp_path / "new"
    result = cli("precompute", "tinylm-sparse", "--atlas", str(new), "--tasks", "none", "--task-file", str(task))
    assert_one_error_line(result, *words)
    assert not new.exists()


@pytest.mark.parametrize("args, words", [
    (["layers", "--model", "os.path:join"], ["'os.path:join': calling it raised TypeError"]),
    (["precompute", "--model", "os.path:join", "--dataset", "DATASET", "--atlas", "NEW"],
     ["'os.path:join': calling it raised TypeError"]),
    (["precompute", "tinyvision", "--device", "tpu", "--atlas", "NEW"], ["--device 'tpu'", "cpu, cuda"]),
])
def test_bad_models_and_devices_are_one_error_line(tmp_path: Path, args: list[str], words: list[str]):
    new = tmp_path / "new"
    args = [{"DATASET": str(SMALL_DATASET), "NEW": str(new)}.get(arg, arg) for arg in args]
    assert_one_error_line(cli(*args), *words)
    assert not new.exists()


# -- item 5: asset suffixes, header size, one word for a damaged index ------------------------------------------


def test_an_asset_answers_only_at_its_media_types_suffix(atlas_dir: Path):
    import sqlite3

    from fastapi.testclient import TestClient

    from server.app import create_app

    with sqlite3.connect(f"file:{atlas_dir / 'atlas.db'}?mode=ro", uri=True) as db:
        sha, media_type = db.execute("SELECT sha256, media_type FROM assets WHERE media_type = 'image/png'").fetchone()
    client = TestClient(create_app(atlas_dir))
    assert client.get(f"/assets/{sha}.png").status_code == 200
    assert client.get(f"/assets/{sha}").status_code == 200  # the bare hash is the blob's name
    for wrong in (".jpg", ".html", ".png.exe", ".PNG", "."):
        answer = client.get(f"/assets/{sha}{wrong}", headers={"Accept": "application/json"})
        assert answer.status_code == 404, wrong
        assert f"/assets/{sha}.png" in answer.json()["error"]["message"]


def test_a_megabyte_of_headers_is_refused(atlas_dir: Path, tmp_path: Path):
    """httptools caps the URL but not the headers; `serve` caps both: the client reads a 431, not a reset."""
    server = Server(atlas_dir, tmp_path / "serve.log", "--workers", "1")
    try:
        server.wait_for(lambda: answers(server, "/-/health", 200), "first answer")
        huge = server.get("/-/health", headers={"X-Padding": "a" * 2**20})
        assert huge is not None and huge.status_code == 431, huge
        assert "request headers too large" in huge.text
        assert server.get("/-/health", headers={"X-Padding": "a" * 8192}).status_code == 200  # as browsers send
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()


def test_verify_on_a_file_says_it_is_a_file(tmp_path: Path):
    from store import AtlasError
    from store.verify import verify_atlas

    path = tmp_path / "atlas.db"
    path.write_bytes(b"")
    with pytest.raises(AtlasError, match="it is a file; an atlas is a directory"):
        verify_atlas(path)


def test_serve_calls_a_half_truncated_index_damaged(atlas_copy: Path, tmp_path: Path):
    """As precompute does (tests/test_job_failures.py): one word for one thing, in the warning, the health probe and
    the pages, and the server stays up serving what it can."""
    from tests.damage import truncated_index

    truncated_index(atlas_copy)
    server = Server(atlas_copy, tmp_path / "serve.log", "--workers", "1")
    try:
        server.wait_for(lambda: server.get("/-/health") is not None, "first answer")
        health = server.get("/-/health")
        assert health.status_code == 503 and health.json()["status"] == "damaged", health.text
        page = server.get("/models/tinyvision.json")
        assert page.status_code == 503 and "is damaged" in page.json()["error"]["message"]
    finally:
        server.stop()
    log = server.log.read_text()
    assert "is damaged" in log and "not an atlas index" not in log and "Traceback" not in log, log


# -- item 7: bfloat16 where the CPU would only emulate it -------------------------------------------------------


def test_bfloat16_is_refused_on_a_cpu_without_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An AMD EPYC without AVX-512 BF16 (the probe's) rendered ten times slower in bfloat16: refused before writing,
    saying why and what to use. With the flag the run is not refused."""
    import render.fast_forward as fast_forward

    epyc = {"flags": "fpu sse2 avx2 avx512f avx512bw", "model name": "AMD EPYC 7B12"}
    monkeypatch.setattr(fast_forward, "cpuinfo", lambda *keys: next((epyc[k] for k in keys if k in epyc), None))
    new = tmp_path / "new"
    result = cli("precompute", "tinyvision", "--atlas", str(new), "--precision", "bfloat16", "--device", "cpu")
    assert_one_error_line(result, "--precision bfloat16: this CPU (AMD EPYC 7B12) has neither AMX nor AVX-512 BF16",
                          "use --precision float32")
    assert not new.exists()
    epyc["flags"] += " avx512_bf16"
    assert fast_forward.bfloat16_refusal("cpu") is None
