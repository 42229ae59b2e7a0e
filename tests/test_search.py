"""Search over HTTP, from the real server: the hand-built LM atlas (``tests/lm_fixture.py``) with its search index
built by ``atlascope index`` on a base install (no torch), the same atlas without the index, and the
hand-built vision atlas (``tests/vision_fixture.py``); and the index the precompute job builds itself, on a small real
language model (``tests/test_lm_precompute.py``'s).

What it proves: a unit named by model, layer and number (or layer and number, or as a path) is a jump (303 from the
HTML page, ``jump`` in the twin); units are found by a token they peak on or promote and by words in their top
contexts, with a snippet marking the match; tasks by their name in words; results page as one list; bad queries are
4xx that say why, and no query text reaches FTS5 as syntax; every twin validates against its pydantic model; every
page's header has the search box; an atlas without the index serves and says how to build it; and the job indexes
what it wrote, writing nothing more when run again."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from server.pages.search import MAX_QUERY
from server.twins import SearchPage
from store.search import CONTEXTS, INDEXED, TOKENS
from tests.conftest import serving
from tests.lm_fixture import (  # noqa: F401 (lm_atlas, lm_server: fixtures)
    DENSE_SLUG, KNOWN_PEAK, KNOWN_TOKENS, LOGIT_EFFECTS, NEURON, NOT_FOUND_TASK, SLUG, TASK, lm_atlas, lm_server,
)
from tests.test_server import NO_TORCH
from tests.vision_fixture import SLUG as VISION_SLUG, vision_atlas, vision_server  # noqa: F401 (fixtures)

PER_PAGE = 4  # results per page on the indexed server, so that a few dozen hits make several pages
PEAK = KNOWN_TOKENS[KNOWN_PEAK].strip()  # "<": the neuron's known top context peaks on " <", and it promotes " <"


def search(client: httpx.Client, query: str | None, **params: str) -> SearchPage:
    """The twin of a search, validated against its model."""
    response = client.get("/search.json", params={**({"q": query} if query is not None else {}), **params})
    assert response.status_code == 200, response.text
    return SearchPage.model_validate(response.json())


def build_index(atlas: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(NO_TORCH), "-m", "precompute.cli", "index", "--atlas", str(atlas)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def indexed_atlas(lm_atlas: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LM fixture atlas with its search index, built as for an atlas made before search existed."""
    atlas = tmp_path_factory.mktemp("searchable") / "atlas"
    shutil.copytree(lm_atlas, atlas)
    done = build_index(atlas)
    assert done.returncode == 0, done.stderr
    return atlas


@pytest.fixture(scope="module")
def client(indexed_atlas: Path):
    with serving(indexed_atlas, env={"ATLASCOPE_SEARCH_PER_PAGE": str(PER_PAGE)}) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client


def test_a_unit_named_in_full_is_a_jump(client: httpx.Client):
    layer, index = NEURON
    unit_url = f"/models/{SLUG}/{layer}/{index}"
    for query in (f"{SLUG} {layer} {index}", f"{SLUG}/{layer}/{index}", f"  {SLUG.upper()}   {layer}  {index} "):
        response = client.get("/search", params={"q": query})
        assert response.status_code == 303 and response.headers["location"] == unit_url, query
        twin = search(client, query)
        assert twin.jump is not None and twin.jump.url == unit_url
        assert twin.results[0].kind == "unit" and twin.results[0].url == unit_url
    # a layer and a number name the unit in every model with that layer: two models here, so no jump
    both = search(client, f"{layer} {index}")
    assert both.jump is None and {hit.model.slug for hit in both.results if hit.kind == "unit"} == {SLUG, DENSE_SLUG}
    assert client.get("/search", params={"q": f"{layer} {index}"}).status_code == 200
    # a number past the layer names nothing
    assert search(client, f"{SLUG} {layer} 9999").jump is None
    named = search(client, f"{SLUG} {layer}")
    assert named.results[0].kind == "layer" and named.results[0].url == f"/models/{SLUG}/{layer}"


def test_a_vision_layer_and_number_jump_to_the_unit(vision_server: str):
    with httpx.Client(base_url=vision_server, timeout=30) as vision:
        response = vision.get("/search", params={"q": "conv2 5"})
        assert response.status_code == 303 and response.headers["location"] == f"/models/{VISION_SLUG}/conv2/5"
        page = search(vision, VISION_SLUG)
        assert page.results[0].kind == "model" and page.index.complete  # no language model: nothing to index


def test_units_are_found_by_a_token_they_peak_on_or_promote(client: httpx.Client):
    page = search(client, PEAK)
    assert page.ranked and all(hit.kind == "unit" for hit in page.results)
    first, *rest = page.results
    assert (first.unit.layer, first.unit.index) == NEURON and first.url == f"/models/{SLUG}/{NEURON[0]}/{NEURON[1]}"
    assert first.peaks == 1 and first.promotes and not first.suppresses  # 1 of its 20 top contexts peaks on " <"
    assert first.top_tokens[0] == KNOWN_TOKENS[KNOWN_PEAK]
    # then every other unit with the fixture's logit effects, which promote " <" but peak on other tokens
    assert KNOWN_TOKENS[KNOWN_PEAK] in [effect["token"] for effect in LOGIT_EFFECTS["promoted"]]
    assert rest and all(hit.promotes and not hit.peaks for hit in rest)
    lower = search(client, "λ")  # promoted by the same units, and in the neuron's known context
    assert lower.page.total > 0 and search(client, "Λ").page.total == lower.page.total  # case is folded


def test_units_are_found_by_words_in_their_top_contexts(client: httpx.Client):
    page = search(client, "def clamp")  # the neuron's known context: "def clamp(x):"
    assert [(hit.unit.layer, hit.unit.index) for hit in page.results] == [NEURON]
    hit = page.results[0]
    assert not hit.peaks and not hit.promotes  # two words are a phrase, never a token
    marked = [fragment.text for fragment in hit.snippet if fragment.match]
    assert marked and all(text in ("def", "clamp", "def clamp") for text in marked)
    assert "(x):" in "".join(fragment.text for fragment in hit.snippet)
    html = client.get("/search", params={"q": "def clamp"}).text
    assert "<mark>" in html and f'href="/models/{SLUG}/{NEURON[0]}/{NEURON[1]}"' in html


def test_tasks_are_found_by_their_name_in_words(client: httpx.Client):
    for query in (TASK.replace("_", " "), TASK.split("_")[-1]):
        tasks = [hit for hit in search(client, query).results if hit.kind == "task"]
        assert [task.slug for task in tasks] == [TASK]
        assert {circuit.model.slug for circuit in tasks[0].circuits} == {SLUG, DENSE_SLUG}
        assert tasks[0].url == f"/circuits/{TASK}"
    assert any(hit.kind == "task" and hit.slug == NOT_FOUND_TASK for hit in search(client, "or string").results)


def test_results_page_as_one_list(client: httpx.Client):
    first = search(client, PEAK)
    assert first.page.total > 2 * PER_PAGE and first.page.pages == -(-first.page.total // PER_PAGE)
    seen, page, pages = [], first, 0
    while True:
        pages += 1
        assert len(page.results) == (PER_PAGE if page.page.next else first.page.total - PER_PAGE * (pages - 1))
        seen += [hit.url for hit in page.results]
        if page.page.next is None:
            break
        assert page.page.next.json_url.endswith(f"&page={pages + 1}")
        page = SearchPage.model_validate(client.get(page.page.next.json_url).json())
        assert page.page.prev is not None and page.page.prev.page == pages
    assert pages == first.page.pages and len(seen) == len(set(seen)) == first.page.total
    past = client.get("/search.json", params={"q": PEAK, "page": str(pages + 1)})
    assert past.status_code == 404 and f"pages run from 1 to {pages}" in past.json()["error"]["message"]


def test_beyond_the_ranked_limit_results_keep_one_order(indexed_atlas: Path, monkeypatch: pytest.MonkeyPatch):
    """Words more units' contexts hold than RANKED_AT_MOST are listed by unit id, not ranked, and pages still split
    one order."""
    from server.pages import search as module
    from store import Atlas

    atlas = Atlas.open_readonly(indexed_atlas)

    def results(per_page: int, number: int) -> tuple[bool, list[str]]:
        with atlas.sessions() as session:
            page = module.search_page(session, "x", str(number), per_page, indexed_atlas, False)
        return page["ranked"], [hit["url"] for hit in page["results"]]

    ranked, by_rank = results(100, 1)
    monkeypatch.setattr(module, "RANKED_AT_MOST", 1)
    unranked, by_id = results(100, 1)
    assert len(by_id) == 3  # the three units with top contexts all hold an "x"
    assert ranked and not unranked and sorted(by_rank) == sorted(by_id)
    assert [url for number in (1, 2, 3) for url in results(1, number)[1]] == by_id


BAD = {
    "": "empty search",
    "   ": "empty search",
    "\x00\x07": "empty search",
    "x" * (MAX_QUERY + 1): f"search of {MAX_QUERY + 1} characters: a query has at most {MAX_QUERY}",
}
# What FTS5 would read as syntax (operators, column filters, prefixes, NEAR, quotes, parentheses) or refuse (NUL)
FTS_SYNTAX = ['"', 'a"b', "a OR b", "NOT x", "x AND", "NEAR(a b)", "text: x", "{text} : x", "x*", "*", "^x", "(", ")",
              "'", "\\", "-x", "+", "x\x00y", "\"\"\"", "λ é", "🙂", "x" * MAX_QUERY]


def test_bad_queries_are_400s_that_say_why(client: httpx.Client):
    for query, message in BAD.items():
        for path in ("/search.json", "/search"):
            response = client.get(path, params={"q": query})
            assert response.status_code == 400, (query, response.text)
            if path.endswith(".json"):
                assert response.json()["error"]["message"].startswith(message)
            else:
                assert message in response.text and 'class="search-box"' in response.text
    for page in ("0", "x", "-1", "9" * 30):
        response = client.get("/search.json", params={"q": PEAK, "page": page})
        assert response.status_code == 404 and "pages run from 1 to" in response.json()["error"]["message"]


def test_no_query_text_is_fts_syntax(client: httpx.Client):
    for query in FTS_SYNTAX:
        for path in ("/search.json", "/search"):
            assert client.get(path, params={"q": query}).status_code == 200, (path, query)
        search(client, query)


def test_the_bare_page_offers_the_box_and_twins_validate(client: httpx.Client):
    bare = search(client, None)
    assert bare.query is None and bare.results == [] and bare.page.total == 0 and bare.index.complete
    page = client.get("/search")
    assert page.status_code == 200 and 'name="q"' in page.text
    assert page.headers["link"] == '</search.json>; rel="alternate"; type="application/json"'
    filled = client.get("/search", params={"q": "def clamp"})
    assert 'value="def clamp"' in filled.text
    schema = client.get("/openapi.json").json()
    ok = schema["paths"]["/search.json"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/SearchPage"}
    assert {"400", "404"} <= set(schema["paths"]["/search.json"]["get"]["responses"])


def test_every_page_has_the_search_box(client: httpx.Client, vision_server: str):
    layer, index = NEURON
    with httpx.Client(base_url=vision_server, timeout=30) as vision:
        pages = [client.get(path) for path in ("/", f"/models/{SLUG}", f"/models/{SLUG}/{layer}",
                                               f"/models/{SLUG}/{layer}/{index}", f"/models/{SLUG}/circuits/{TASK}",
                                               "/circuits", f"/circuits/{TASK}", "/search", "/no/such/page")]
        pages += [vision.get(path) for path in (f"/models/{VISION_SLUG}", f"/models/{VISION_SLUG}/conv1/0")]
    for response in pages:
        assert response.headers["content-type"].startswith("text/html")
        header = response.text.split("<header", 1)[1].split("</header>", 1)[0]
        assert '<form class="search-box" method="get" action="/search" role="search">' in header, response.url
        assert '<input type="search" name="q"' in header


def test_an_atlas_without_the_index_serves_and_says_how_to_build_it(lm_server: str, lm_atlas: Path):
    with httpx.Client(base_url=lm_server, timeout=30) as bare:
        page = search(bare, "def clamp")
        assert not page.index.complete and {model.slug for model in page.index.missing} == {SLUG, DENSE_SLUG}
        assert f"atlascope index --atlas {lm_atlas}" in page.index.message
        assert page.results == []  # found by name only: no name holds these words
        assert [hit.kind for hit in search(bare, TASK).results] == ["task"]
        assert bare.get("/search", params={"q": f"{SLUG} {NEURON[0]} {NEURON[1]}"}).status_code == 303
        html = bare.get("/search", params={"q": "def clamp"}).text
        assert 'id="index-missing"' in html and "atlascope index" in html


def index_rows(atlas: Path) -> dict[str, list[tuple]]:
    """Everything the index holds, the FTS5 table's segments included: the same after a run that rewrote nothing."""
    with sqlite3.connect(atlas / "atlas.db") as db:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                for table in (TOKENS, f"{CONTEXTS}_data", f"{CONTEXTS}_content", INDEXED)}


def test_the_command_rewrites_nothing_that_is_up_to_date(indexed_atlas: Path, tmp_path: Path):
    atlas = tmp_path / "atlas"
    shutil.copytree(indexed_atlas, atlas)
    before = index_rows(atlas)
    again = build_index(atlas)
    assert again.returncode == 0 and ": 0 of 42 language-model layers (re)indexed" in again.stdout, again.stdout
    assert index_rows(atlas) == before


def test_the_job_indexes_what_it_wrote_and_a_rerun_writes_nothing(tmp_path: Path):
    from tests.test_lm_precompute import precompute, spec

    atlas = tmp_path / "atlas"
    precompute(atlas)
    built = index_rows(atlas)
    assert len(built[INDEXED]) == len(spec("sparse").layers) and built[TOKENS]  # every layer, by its search index stage
    precompute(atlas)
    assert index_rows(atlas) == built
    with sqlite3.connect(atlas / "atlas.db") as db:  # what the command builds from the same atlas, from nothing
        for table in (TOKENS, CONTEXTS, INDEXED):
            db.execute(f"DROP TABLE {table}")
    assert build_index(atlas).returncode == 0
    rebuilt = index_rows(atlas)
    assert {table: rebuilt[table] for table in (TOKENS, f"{CONTEXTS}_content", INDEXED)} == \
        {table: built[table] for table in (TOKENS, f"{CONTEXTS}_content", INDEXED)}
    with sqlite3.connect(atlas / "atlas.db") as db:  # the tokens the strongest top contexts peak on
        windows = db.execute("SELECT source FROM examples WHERE kind = 'top' ORDER BY activation DESC LIMIT 50")
        peaks = [window["tokens"][window["position"]].strip() for window in map(json.loads, (w for w, in windows))]
    peak = next(token for token in peaks if token and not any(char.isspace() for char in token))
    with serving(atlas) as url, httpx.Client(base_url=url, timeout=30) as served:
        page = search(served, peak)
        assert page.index.complete and page.results[0].kind == "unit" and page.results[0].peaks
