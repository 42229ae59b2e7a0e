"""``atlascope export``, run as on a base install (``tests/no_torch.py``: no torch, no numpy), on the hand-built atlases
(``tests/vision_fixture.py``, ``tests/lm_fixture.py``).

What it proves: crawling the live server and crawling the static export served by ``python -m http.server`` find the
same pages, twins and assets, every link of the export answering, with the same contents (a page with a query at its
static address); in Chromium the export's pager and embed snippet work; the Parquet tables hold every unit with its
statistics, the contexts, examples, edges, circuits and circuit nodes, typed, and each circuit's circuit-tracer JSON is
the server's; bad input exits 2 with a message and leaves the target as it was.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from server.export.site import json_links, static_html, static_json, static_url
from store.keys import ExampleKind
from tests.conftest import free_port
from tests.lm_fixture import (  # noqa: F401 (lm_atlas, lm_server: fixtures)
    DENSE_SLUG, HISTOGRAM, KNOWN_TOKENS, NEURON, QUOTE_CURVE, QUOTE_EDGES, QUOTE_NODES, SLUG as LM_SLUG, TASK,
    lm_atlas, lm_server,
)
from tests.test_server import NO_TORCH
from tests.vision_fixture import (  # noqa: F401 (vision_atlas, vision_server: fixtures)
    FOCUS, MIDDLE_N, PER_PAGE, SLUG as VISION_SLUG, TOP_N, vision_atlas, vision_server,
)

LINK = re.compile(r'\s(?:href|src)="([^"]*)"')


def export(kind: str, out: Path, atlas: Path, *, block: str = "") -> subprocess.CompletedProcess:
    """``atlascope export KIND OUT --atlas ATLAS`` without torch and numpy (and without ``block``, a module more)."""
    script = (f"BLOCKED.update({block!r}.split()); import runpy, sys; "
              f"sys.argv = ['atlascope', 'export', {kind!r}, {str(out)!r}, '--atlas', {str(atlas)!r}]; "
              "runpy.run_module('precompute.cli', run_name='__main__')")
    return subprocess.run([sys.executable, str(NO_TORCH), "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_COLOR": "1", "ATLASCOPE_PER_PAGE": str(PER_PAGE)})


@contextmanager
def static_host(root: Path) -> Iterator[str]:
    """``python -m http.server`` serving ``root``: a static host that knows nothing of atlascope."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                             str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def crawl(base: str) -> dict[str, httpx.Response]:
    """Every page, twin and asset of the site at ``base`` that its pages link to from ``/`` (``href`` and ``src`` in
    pages; ``url`` and ``json_url`` in twins), static files aside: each as linked, with its answer."""
    found, todo, answers = {"/"}, ["/"], {}
    with httpx.Client(base_url=base, follow_redirects=True, timeout=30) as client:
        while todo:
            url = todo.pop()
            answer = answers[url] = client.get(url)
            if url.partition("?")[0].endswith(".json"):
                links = list(json_links(answer.json()))
            elif answer.headers.get("content-type", "").startswith("text/html"):
                links = [html.unescape(link) for link in LINK.findall(answer.text)]
            else:
                links = []
            for link in (link.partition("#")[0] for link in links):
                if link.startswith("/") and not link.startswith(("//", "/static/")) and link not in found:
                    found.add(link)
                    todo.append(link)
    return answers


@pytest.fixture(scope="module")
def vision_site(vision_atlas: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "site"
    done = export("static", out, vision_atlas)
    assert done.returncode == 0, done.stderr
    assert f"exported {vision_atlas} as static into {out}" in done.stderr
    return out


@pytest.fixture(scope="module")
def vision_host(vision_site: Path) -> Iterator[str]:
    with static_host(vision_site) as url:
        yield url


def test_the_static_export_has_the_live_sites_pages(vision_server: str, vision_host: str, vision_site: Path):
    live, static = crawl(vision_server), crawl(vision_host)
    assert {static_url(url) for url in live} == set(static)
    assert all(answer.status_code == 200 for answer in [*live.values(), *static.values()])
    kinds = {"page": 0, "twin": 0, "asset": 0, "query": 0, "embed": 0}
    for url, answer in live.items():
        copy = static[static_url(url)]
        if url.partition("?")[0].endswith(".json"):
            assert copy.json() == static_json(answer.json()), url
            kinds["twin"] += 1
        elif answer.headers["content-type"].startswith("text/html"):
            assert copy.text == static_html(answer.text), url
            kinds["page"] += 1
        else:
            assert copy.content == answer.content and url.startswith("/assets/"), url
            kinds["asset"] += 1
        kinds["query"] += "?" in url
        kinds["embed"] += url.endswith("?embed=1")
    # the vision atlas's 44 units, each with its embed view; its grid pages, thumbnails and sorts; its pictures
    assert kinds["embed"] == 44 and kinds["query"] > 44 and kinds["asset"] > 40 and kinds["twin"] > 44
    # a page with a query is at its static address, and so are the links to it
    conv1 = f"/models/{VISION_SLUG}/conv1"
    assert (vision_site / conv1.lstrip("/") / "page=2" / "index.html").is_file()
    assert (vision_site / conv1.lstrip("/") / "page=2.json").is_file()
    assert static[conv1].text.count(f'href="{conv1}/page=2/"') >= 1
    assert static[f"{conv1}.json"].json()["page"]["next"]["url"] == f"{conv1}/page=2/"
    # and what the static copy has besides: Swagger UI's schema, a 404 page, and a search page saying it needs a server
    assert json.loads((vision_site / "openapi.json").read_text())["info"]["title"] == "atlascope"
    assert httpx.get(f"{vision_host}/search?q=conv1", follow_redirects=True).text.count("search needs the server") == 1
    assert "No page at this address" in (vision_site / "404.html").read_text()


def test_the_exports_links_work_in_chromium(page, vision_host: str):
    page.goto(f"{vision_host}/models/{VISION_SLUG}/conv1", wait_until="load")
    page.locator("nav.pager a", has_text="next").first.click()
    page.wait_for_url(f"**/models/{VISION_SLUG}/conv1/page=2/")
    assert page.locator(f'a[href="/models/{VISION_SLUG}/conv1/{PER_PAGE}"]').count() >= 1  # the second page's units
    page.keyboard.press("ArrowRight")  # the layer's keyboard paging follows <link rel=next>, rewritten too
    page.wait_for_url(f"**/models/{VISION_SLUG}/conv1/page=3/")
    page.goto(f"{vision_host}/models/{VISION_SLUG}/{FOCUS[0]}/{FOCUS[1]}", wait_until="load")
    snippet = page.locator("#embed-code").input_value()
    assert f'src="{vision_host}/models/{VISION_SLUG}/{FOCUS[0]}/{FOCUS[1]}/embed=1/"' in snippet
    page.set_content(snippet)
    frame = page.frame_locator("iframe")
    frame.locator("figure.unit-image img").first.wait_for(timeout=15_000)
    assert frame.locator("header").count() == 0 and frame.locator("footer").count() == 0


@pytest.fixture(scope="module")
def lm_tables(lm_atlas: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tables"
    done = export("parquet", out, lm_atlas)
    assert done.returncode == 0, done.stderr
    return out


def rows(out: Path, table: str) -> list[dict]:
    return pq.read_table(out / f"{table}.parquet").to_pylist()


def test_parquet_holds_every_unit_with_its_statistics(lm_tables: Path, lm_server: str):
    units = rows(lm_tables, "units")
    for slug in (LM_SLUG, DENSE_SLUG):
        layers = httpx.get(f"{lm_server}/models/{slug}.json", timeout=30).json()["layers"]
        assert sum(1 for u in units if u["model"] == slug) == sum(layer["n_units"] for layer in layers)
    neuron = next(u for u in units if (u["model"], u["layer"], u["unit"]) == (LM_SLUG, *NEURON))
    twin = httpx.get(f"{lm_server}{neuron['url']}.json", timeout=30).json()
    assert neuron["density"] == twin["activation"]["density"] and neuron["max"] == twin["activation"]["max"]
    assert neuron["top_tokens"] == twin["activation"]["top_tokens"] and neuron["n"] == twin["activation"]["n"]
    assert neuron["histogram"] == HISTOGRAM
    assert neuron["promoted"] == twin["logit_effects"]["promoted"]
    assert neuron["suppressed"] == twin["logit_effects"]["suppressed"]
    assert neuron["dataset_mean"] is None and neuron["images"] == []
    contexts = [c for c in rows(lm_tables, "contexts") if (c["model"], c["layer"], c["unit"]) == (LM_SLUG, *NEURON)]
    top = sorted((c for c in contexts if c["kind"] == ExampleKind.TOP), key=lambda c: c["rank"])
    assert [c["tokens"] for c in top] == [c["tokens"] for c in twin["contexts"]["top"]]
    assert top[0]["tokens"] == KNOWN_TOKENS and top[0]["values"] == twin["contexts"]["top"][0]["values"]
    shown = twin["contexts"]
    assert len(contexts) == len(shown["top"]) + len(shown["bottom"]) + len(shown["random"]) + sum(
        len(band["contexts"]) for band in shown["bands"])
    banded = sorted((c["band"], c["tokens"]) for c in contexts if c["kind"] == ExampleKind.BAND)
    assert banded and banded == sorted((i, c["tokens"]) for i, band in enumerate(shown["bands"])
                                       for c in band["contexts"])
    assert all(c["band"] is None for c in contexts if c["kind"] != ExampleKind.BAND)
    assert rows(lm_tables, "examples") == []  # a language model's windows are contexts


def test_parquet_holds_circuits_their_nodes_edges_and_tracer_json(lm_tables: Path, lm_server: str):
    circuits = rows(lm_tables, "circuits")
    quote = next(c for c in circuits if (c["model"], c["circuit"]) == (LM_SLUG, TASK))
    twin = httpx.get(f"{lm_server}{quote['url']}.json", timeout=30).json()
    assert quote["met"] is True and (quote["n_nodes"], quote["n_edges"]) == (twin["n_nodes"], twin["n_edges"])
    assert json.loads(quote["params"])["curve"] == QUOTE_CURVE
    nodes = {(n["layer"], n["unit"]): n["tau"] for n in rows(lm_tables, "circuit_nodes")
             if (n["model"], n["circuit"]) == (LM_SLUG, TASK)}
    assert nodes == QUOTE_NODES
    edges = rows(lm_tables, "edges")
    circuit_edges = {((e["src_layer"], e["src_unit"]), (e["dst_layer"], e["dst_unit"]), e["weight"]) for e in edges
                     if (e["model"], e["circuit"]) == (LM_SLUG, TASK)}
    assert circuit_edges == set(QUOTE_EDGES)
    assert any(e["circuit"] is None and e["kind"] == "weight" for e in edges)  # the model's own weights too
    assert len(circuits) == 6  # three tasks for each of the two models
    for circuit in circuits:
        written = json.loads((lm_tables / "circuit-tracer" / circuit["model"] / f"{circuit['circuit']}.json").read_text())
        assert written == httpx.get(f"{lm_server}{circuit['graph']}", timeout=30).json()


def test_parquet_holds_a_vision_units_examples_and_pictures(vision_atlas: Path, vision_server: str, tmp_path: Path):
    done = export("parquet", tmp_path / "tables", vision_atlas)
    assert done.returncode == 0, done.stderr
    examples = [e for e in rows(tmp_path / "tables", "examples") if (e["layer"], e["unit"]) == FOCUS]
    assert sorted(e["kind"] for e in examples) == sorted([ExampleKind.TOP] * TOP_N + [ExampleKind.MIDDLE] * MIDDLE_N)
    twin = httpx.get(f"{vision_server}/models/{VISION_SLUG}/{FOCUS[0]}/{FOCUS[1]}.json", timeout=30).json()
    first = next(e for e in examples if e["kind"] == ExampleKind.TOP and e["rank"] == 0)
    shown = twin["examples"][0]
    assert (first["box"], first["cell"], first["item"], first["image"]) == (
        shown["box"], shown["cell"], shown["item"], shown["image"]["url"])
    unit = next(u for u in rows(tmp_path / "tables", "units") if (u["layer"], u["unit"]) == FOCUS)
    assert unit["quartiles"] == twin["stats"]["quartiles"] and unit["examples_n"] == twin["stats"]["examples_n"]
    assert [image["url"] for image in unit["images"]] == [image["url"] for image in twin["images"]]
    assert httpx.get(f"{vision_server}{first['image']}", timeout=30).status_code == 200
    kernels = [e["kernel"] for e in rows(tmp_path / "tables", "edges") if (e["dst_layer"], e["dst_unit"]) == FOCUS]
    assert kernels and all(httpx.get(f"{vision_server}{k}", timeout=30).status_code == 200 for k in kernels[:3])


def test_bad_input_exits_2_and_leaves_the_target_as_it_was(vision_atlas: Path, tmp_path: Path):
    kept = tmp_path / "full"
    kept.mkdir()
    (kept / "mine.txt").write_text("keep me")
    done = export("static", kept, vision_atlas)
    assert done.returncode == 2 and "is not empty" in done.stderr
    assert [p.name for p in kept.iterdir()] == ["mine.txt"] and (kept / "mine.txt").read_text() == "keep me"

    done = export("static", kept / "mine.txt", vision_atlas)
    assert done.returncode == 2 and "is not a directory" in done.stderr

    done = export("static", tmp_path / "new", tmp_path / "no-atlas")
    assert done.returncode == 2 and "no atlas at" in done.stderr and not (tmp_path / "new").exists()

    done = export("xml", tmp_path / "new", vision_atlas)
    assert done.returncode == 2 and "unknown export format 'xml'" in done.stderr and "parquet" in done.stderr

    done = export("parquet", tmp_path / "new", vision_atlas, block="pyarrow")
    assert done.returncode == 2 and "pip install 'atlascope[export]'" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # no directory made, nothing left beside it

    empty = tmp_path / "empty"
    empty.mkdir()
    done = export("parquet", empty, vision_atlas)  # an empty directory is filled
    assert done.returncode == 0, done.stderr
    assert (empty / "units.parquet").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["empty", "full"]
