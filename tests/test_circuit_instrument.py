"""The circuit page as an instrument (issue 22), over HTTP and in a real headless Chromium, on the hand-built LM atlas
with a stored node order (``tests/circuit_views_fixture.py``): the twin and the circuit-tracer JSON at every k the page
offers are the stored order cut at k, recomputed here from the tables; the per-layer counts, ablation bars, pairs'
activations and heads at k are the stored probes at k; the view's pins, groups and labels round-trip through the
URL (pin, group, label, reload: the same view) and reach the graph JSON's qParams; a k the page does not offer is a
404 that names those it does; an atlas from before stored orders offers the circuit's own k only."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.circuit_views_fixture import (  # noqa: F401 (views_atlas, views_server: fixtures)
    ACTIVATION_NODES, GROUPS, KS, LISTED_K, PAIRS, views_atlas, views_server,
)
from tests.lm_fixture import (  # noqa: F401 (lm_atlas, lm_server: fixtures)
    DENSE_EDGES, NOT_FOUND_TASK, QUOTE_CURVE, QUOTE_EDGES, QUOTE_NODES, SLUG, TASK, dense_nodes, lm_atlas, lm_server,
)
from tests.test_server import assert_twin

QUOTE = f"/models/{SLUG}/circuits/{TASK}"
CIRCUIT_K = len(QUOTE_NODES)
NEURON_ID, QUERY_ID = "7_3_5", "10_2_5"  # their node_ids: column, index, the first example's last position


@pytest.fixture(scope="module")
def client(views_server: str):
    with httpx.Client(base_url=views_server, timeout=60) as client:
        yield client


def rows(atlas: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(atlas / "atlas.db") as db:
        return db.execute(sql, args).fetchall()


def stored_order(atlas: Path) -> list[tuple[str, int, float, int]]:
    """(layer, index, tau, edges_in) by rank, read from the table."""
    return [tuple(row) for row in rows(atlas, """SELECT l.name, u."index", o.tau, o.edges_in FROM circuit_order o
        JOIN units u ON u.id = o.unit_id JOIN layers l ON l.id = u.layer_id ORDER BY o.rank""")]


def probe(atlas: Path, name: str):
    (value,) = rows(atlas, "SELECT value FROM circuit_probes WHERE name = ?", name)[0]
    return json.loads(value)


def recomputed(atlas: Path, k: int) -> dict:
    """The circuit at k from the stored tables alone: its first k nodes, the weights whose ends both rank below k,
    their count, and the logit reads of its write channels."""
    order = stored_order(atlas)
    kept = {(layer, index): tau for layer, index, tau, _ in order[:k]}
    names = [(layer, index) for layer, index, _, _ in order]
    edges = sorted((*names[src], *names[dst], weight) for src, dst, weight in rows(
        atlas, "SELECT src_rank, dst_rank, weight FROM circuit_order_edges WHERE src_rank < ? AND dst_rank < ?", k, k))
    reads = sorted((r["layer"], r["index"], r["token"], r["weight"]) for r in probe(atlas, "logits")
                   if (r["layer"], r["index"]) in kept)
    return {"nodes": kept, "edges": edges, "n_edges": sum(row[3] for row in order[:k]), "logits": reads,
            "ranks": {name: rank for rank, name in enumerate(names)}}


def twin_at(client: httpx.Client, k: int | None) -> dict:
    return assert_twin(client, QUOTE + ("" if k is None else f"?k={k}"))


def test_the_twin_at_every_k_is_the_stored_order_cut_at_k(client: httpx.Client, views_atlas: Path):
    for k in KS:
        body, expected = twin_at(client, k), recomputed(views_atlas, k)
        assert {(n["layer"], n["index"]): n["tau"] for n in body["nodes"]} == expected["nodes"]
        assert all(n["rank"] == expected["ranks"][n["layer"], n["index"]] for n in body["nodes"])
        edges = sorted((e["src_layer"], e["src_index"], e["dst_layer"], e["dst_index"], e["weight"])
                       for e in body["edges"])
        view = body["view"]
        assert (view["k"], view["circuit_k"], view["n_edges"], view["listed_k"]) == (
            k, CIRCUIT_K, expected["n_edges"], LISTED_K)
        assert view["loss"] == dict(QUOTE_CURVE)[k] and view["total"] == len(stored_order(views_atlas))
        if k <= LISTED_K:
            assert view["edges_listed"] and edges == expected["edges"] and len(edges) == view["n_edges"]
        else:  # counted in full, listed up to LISTED_K
            assert not view["edges_listed"] and edges == recomputed(views_atlas, LISTED_K)["edges"]
            assert len(edges) < view["n_edges"]
        assert sorted((r["layer"], r["index"], r["token"], r["weight"]) for r in body["logits"]) == expected["logits"]
        assert {r["dst_layer"] for r in body["residual"]} <= {layer for layer, _ in expected["nodes"]}
        assert [c["k"] for c in view["choices"]] == KS
        assert (body["url"], body["json_url"]) == (f"{QUOTE}?k={k}", f"{QUOTE}.json?k={k}")
        assert [c["url"] for c in view["choices"]] == [QUOTE if at == CIRCUIT_K else f"{QUOTE}?k={at}" for at in KS]
        counts = {entry["layer"]: entry["nodes"] for entry in body["layers"]}
        assert sum(counts.values()) == k and all(
            counts[layer] == sum(1 for kept, _ in expected["nodes"] if kept == layer) for layer in counts)


def test_the_circuits_own_k_is_the_circuit(client: httpx.Client):
    for body in (twin_at(client, None), twin_at(client, CIRCUIT_K)):
        assert {(n["layer"], n["index"]): n["tau"] for n in body["nodes"]} == QUOTE_NODES
        assert sorted(((e["src_layer"], e["src_index"]), (e["dst_layer"], e["dst_index"]), e["weight"])
                      for e in body["edges"]) == sorted(QUOTE_EDGES)
        assert body["view"]["k"] == CIRCUIT_K and body["view"]["n_edges"] == body["n_edges"] == len(QUOTE_EDGES)


def test_the_tracer_json_at_k_is_the_twin_at_k(client: httpx.Client, views_atlas: Path):
    for k in (4, CIRCUIT_K, 32):
        twin, graph = twin_at(client, k), client.get(f"{QUOTE}/graph.json?k={k}").json()
        ids = {(n["layer"], n["index"]): n["tracer_id"] for n in twin["nodes"] + twin["embeddings"]}
        logits = {c["token"]: c["tracer_id"] for c in twin["candidates"]}
        assert {n["node_id"] for n in graph["nodes"]} == set(ids.values()) | set(logits.values())
        weights = {(ids[e["src_layer"], e["src_index"]], ids[e["dst_layer"], e["dst_index"]], e["weight"])
                   for e in twin["edges"]}
        links = {(link["source"], link["target"], link["weight"]) for link in graph["links"]}
        assert weights <= links and len(weights) == len(recomputed(views_atlas, k)["edges"])
        assert len(graph["links"]) == len(twin["edges"]) + len(twin["residual"]) + len(twin["logits"])
        assert graph["metadata"]["info"]["k"] == k
        assert graph["qParams"]["pinnedIds"] == [ids[n["layer"], n["index"]] for n in twin["nodes"]] + list(
            logits.values())  # no state given: the whole circuit at k pinned


def test_the_views_state_becomes_the_exports_qparams(client: httpx.Client):
    state = {"pinnedIds": f"{NEURON_ID},{QUERY_ID},99_9_9", "supernodes": json.dumps([["quote", NEURON_ID, QUERY_ID],
                                                                                       ["gone", "99_9_9"]]),
             "clerps": json.dumps([[NEURON_ID, "detects a quote"], ["99_9_9", "nothing"]])}
    graph = client.get(f"{QUOTE}/graph.json", params={"k": "32", **state}).json()
    assert graph["qParams"]["pinnedIds"] == [NEURON_ID, QUERY_ID]  # a node not in the graph at k is left out
    assert graph["qParams"]["supernodes"] == [["quote", NEURON_ID, QUERY_ID]]  # so is a group left empty
    assert graph["qParams"]["clerps"] == [[NEURON_ID, "detects a quote"]]
    for name, bad in (("supernodes", "[1]"), ("supernodes", "not json"), ("clerps", '[["a"]]')):
        answer = client.get(f"{QUOTE}/graph.json", params={name: bad})
        assert answer.status_code == 400 and name in answer.json()["error"]["message"]


def test_a_k_the_page_does_not_offer_is_a_404_naming_those_it_does(client: httpx.Client):
    for bad in ("3", "abc", "-1", "1e3"):
        answer = client.get(f"{QUOTE}.json", params={"k": bad})
        assert answer.status_code == 404
        assert "offers k = " + ", ".join(str(k) for k in KS) in answer.json()["error"]["message"]
    assert client.get(f"{QUOTE}/graph.json", params={"k": "3"}).status_code == 404
    answer = client.get(f"/models/{SLUG}/circuits/{NOT_FOUND_TASK}.json", params={"k": "1"})
    assert answer.status_code == 404 and "was not found" in answer.json()["error"]["message"]


def test_the_probes_at_k_are_the_stored_ones_at_k(client: httpx.Client, views_atlas: Path):
    ablations = {k: losses for k, losses in probe(views_atlas, "ablations")["losses"]}
    activations = probe(views_atlas, "activations")["values"]
    heads = probe(views_atlas, "heads")
    for k in KS:
        body = twin_at(client, k)
        loss_at_k = dict(QUOTE_CURVE)[k]
        bars = body["ablations"]
        assert [bar["group"] for bar in bars] == GROUPS and [bar["loss"] for bar in bars] == ablations[k]
        groups = [".".join(n["layer"].split(".")[:2]) for n in body["nodes"]]
        assert [bar["nodes"] for bar in bars] == [groups.count(group) for group in GROUPS]
        assert all((bar["loss"] is None) == (bar["nodes"] == 0) for bar in bars)
        assert all(bar["delta"] == pytest.approx(bar["loss"] - loss_at_k) for bar in bars if bar["loss"] is not None)
        acts = body["activations"]
        ranks = sorted(n["rank"] for n in body["nodes"] if n["rank"] < ACTIVATION_NODES)
        assert [row["rank"] for row in acts["nodes"]] == ranks
        assert all(row["values"] == activations[row["rank"]] for row in acts["nodes"])
        assert acts["pairs"] == PAIRS and acts["stored_nodes"] == ACTIVATION_NODES
        attention = {(int(n["layer"][0]), n["index"] // 4) for n in body["nodes"]
                     if n["layer"].split(".", 1)[1] in ("attn.q", "attn.k", "attn.v")}
        assert [(h["block"], h["head"]) for h in body["heads"]] == [
            (h["block"], h["head"]) for h in heads if (h["block"], h["head"]) in attention]


def test_the_page_links_every_k_and_the_download_carries_k(client: httpx.Client):
    page = client.get(f"{QUOTE}?k=32").text
    for k in KS:
        href = QUOTE if k == CIRCUIT_K else f"{QUOTE}?k={k}"
        assert f'href="{href}" data-k="{k}"' in page  # the k picker's link, and the curve's point
        assert page.count(f'data-k="{k}"') == 2
    assert f'id="download-graph" href="{QUOTE}/graph.json?k=32"' in page
    assert 'id="other-k"' in page and 'id="other-k"' not in client.get(QUOTE).text


def test_the_comparison_draws_dense_and_sparse_side_by_side_at_one_scale(client: httpx.Client):
    body = assert_twin(client, f"/circuits/{TASK}")
    (pair,) = [p for p in body["pairs"] if p["loss"] is not None]
    (drawn,) = body["drawings"]
    assert (drawn["loss"], drawn["at_target"]) == (pair["loss"], True)
    for side, nodes, edges in (("sparse", QUOTE_NODES, QUOTE_EDGES), ("dense", dense_nodes(), DENSE_EDGES)):
        d = drawn[side]
        assert d["model"] == pair[side] and d["k"] == pair[f"{side}_size"]["nodes"] == len(nodes)
        assert {(n["layer"], n["index"]) for n in d["nodes"]} == set(nodes)
        assert d["n_edges"] == pair[f"{side}_size"]["edges"] == len(d["edges"]) == len(edges)
        named = {((d["nodes"][e["src"]]["layer"], d["nodes"][e["src"]]["index"]),
                  (d["nodes"][e["dst"]]["layer"], d["nodes"][e["dst"]]["index"]), e["weight"]) for e in d["edges"]}
        assert named == set(edges)
        columns: dict[int, list[int]] = {}
        for n in d["nodes"]:
            columns.setdefault(n["column"], []).append(n["row"])
        assert all(sorted(rows) == list(range(len(rows))) for rows in columns.values())
        assert d["rows"] == max(map(len, columns.values())) and set(columns) <= set(drawn["columns"])
    assert drawn["rows"] == max(drawn["dense"]["rows"], drawn["sparse"]["rows"])
    page = client.get(f"/circuits/{TASK}").text
    figures = page.split('id="side-pair-1"')[1].split("</section>")[0].split("<figure")[1:]
    assert [f.count("<line ") for f in figures] == [len(DENSE_EDGES), len(QUOTE_EDGES)]
    assert [f.count("<circle ") for f in figures] == [len(dense_nodes()), len(QUOTE_NODES)]
    heights = [int(f.split('height="')[1].split('"')[0]) for f in figures]
    assert heights[0] == heights[1]  # one scale: the same height for both
    assert f"{len(DENSE_EDGES):,} edges" in figures[0] and f"{len(QUOTE_EDGES)} edges" in figures[1]
    unsolved = client.get(f"/circuits/{NOT_FOUND_TASK}.json").json()["drawings"]  # compared away from the target
    assert [(d["dense"], d["sparse"]) for d in unsolved] == [(None, None)]  # neither has a stored order there


def test_an_atlas_from_before_stored_orders_offers_the_circuits_own_k(lm_server: str):
    body = httpx.get(f"{lm_server}{QUOTE}.json", timeout=60).json()
    view = body["view"]
    assert (view["k"], view["total"], [c["k"] for c in view["choices"]]) == (CIRCUIT_K, None, [CIRCUIT_K])
    assert (body["ablations"], body["activations"], body["heads"]) == (None, None, None)
    assert sum(entry["nodes"] for entry in body["layers"]) == CIRCUIT_K
    answer = httpx.get(f"{lm_server}{QUOTE}.json", params={"k": "4"}, timeout=60)
    assert answer.status_code == 404 and "offers k = 15" in answer.json()["error"]["message"]


# -- in Chromium -------------------------------------------------------------------------------------------------------

def open_graph(page, url: str) -> None:
    page.goto(url, wait_until="load")
    page.wait_for_function("() => window.circuitGraph !== undefined", timeout=30_000)


def click_node(page, tracer_id: str, modifiers: list[str] | None = None) -> None:
    """Click a node as a reader would: with the graph scrolled into view first (cytoscape learns where its container
    moved on the scroll event, so a click in the same instant as the scroll lands where the node was)."""
    graph = page.locator("#circuit-graph")
    graph.scroll_into_view_if_needed()
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    at = page.evaluate("""(tracer) => window.circuitGraph.nodes().filter(n => n.data('tracer') === tracer)[0]
        .renderedPosition()""", tracer_id)
    graph.click(position={"x": at["x"], "y": at["y"]}, modifiers=modifiers or [])


def view_of(page) -> dict:
    """What the graph shows of the reader's view: pinned nodes, groups with their members, labels."""
    return page.evaluate("""() => ({
        pinned: window.circuitGraph.nodes('.pinned').map(n => n.data('tracer')).sort(),
        groups: window.circuitGraph.nodes('.supernode').map(g => [g.data('label'),
                                                                  ...g.children().map(n => n.data('tracer')).sort()]),
        labels: window.circuitGraph.nodes('.labelled').map(n => [n.data('tracer'), n.data('label')]) })""")


def query_of(page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def test_pins_groups_and_labels_round_trip_through_the_url(page, views_server: str):
    open_graph(page, f"{views_server}{QUOTE}?k=32")
    click_node(page, NEURON_ID, ["Control"])
    page.wait_for_function(f"() => window.location.search.includes('pinnedIds={NEURON_ID}')")
    click_node(page, QUERY_ID, ["Shift"])  # the list of pins has grown above the graph: the click still finds it
    page.wait_for_function(f"() => window.location.search.includes('{QUERY_ID}')")
    assert query_of(page)["pinnedIds"] == [f"{NEURON_ID},{QUERY_ID}"] and page.url.startswith(f"{views_server}{QUOTE}")
    page.fill("#group-name", "quote pair")
    page.click("#group-button")
    label = page.locator(f'#pinned-list li[data-tracer="{NEURON_ID}"] input')
    label.fill("quote detector")
    label.press("Enter")
    expected = {"pinned": sorted([NEURON_ID, QUERY_ID]), "groups": [["quote pair", *sorted([NEURON_ID, QUERY_ID])]],
                "labels": [[NEURON_ID, "quote detector"]]}
    page.wait_for_function("() => window.location.search.includes('clerps')")
    assert view_of(page) == expected
    query = query_of(page)
    assert query["k"] == ["32"] and json.loads(query["supernodes"][0]) == [["quote pair", NEURON_ID, QUERY_ID]]
    assert json.loads(query["clerps"][0]) == [[NEURON_ID, "quote detector"]]
    download = page.get_attribute("#download-graph", "href")
    assert parse_qs(urlsplit(download).query) == query  # the export carries the same view
    page.reload(wait_until="load")
    page.wait_for_function("() => window.circuitGraph !== undefined")
    assert view_of(page) == expected and query_of(page) == query
    exported = httpx.get(views_server + download, timeout=60).json()["qParams"]
    assert (exported["pinnedIds"], exported["supernodes"], exported["clerps"]) == (
        [NEURON_ID, QUERY_ID], [["quote pair", NEURON_ID, QUERY_ID]], [[NEURON_ID, "quote detector"]])

    page.click('#k-choices a[data-k="64"]')  # another k keeps the view
    page.wait_for_function("() => window.circuitGraph !== undefined && window.location.search.includes('k=64')")
    assert view_of(page) == expected and {key: value for key, value in query_of(page).items() if key != "k"} == {
        key: value for key, value in query.items() if key != "k"}
    page.click("#reset-view")
    page.wait_for_function("() => window.circuitGraph !== undefined && !window.location.search")
    assert page.url == f"{views_server}{QUOTE}" and view_of(page) == {"pinned": [], "groups": [], "labels": []}


def test_the_slider_and_the_curve_choose_k(page, views_server: str):
    open_graph(page, f"{views_server}{QUOTE}")
    slider = page.locator("#k-slider")
    assert slider.is_visible() and slider.input_value() == str(KS.index(CIRCUIT_K))
    slider.fill(str(KS.index(4)))
    page.wait_for_function("() => window.location.search === '?k=4'")
    page.wait_for_function("() => window.circuitGraph !== undefined")
    assert page.evaluate("() => window.circuitGraph.nodes('.unit').not('.embedding').length") == 4
    page.locator('a.k-link[data-k="8"]').click()
    page.wait_for_function("() => window.location.search === '?k=8'")


def test_the_heatmap_shows_a_pair_and_links_its_nodes(page, views_server: str):
    open_graph(page, f"{views_server}{QUOTE}")
    twin = httpx.get(f"{views_server}{QUOTE}.json", timeout=60).json()
    rows_drawn = page.locator("#heatmap a.heatmap-node")
    assert rows_drawn.count() == len(twin["activations"]["nodes"])
    assert page.locator("#heatmap rect.cell").count() == len(twin["activations"]["nodes"]) * len(PAIRS)
    first = twin["activations"]["nodes"][0]
    cell = page.locator('#heatmap rect.cell[data-row="0"][data-pair="1"]')
    assert float(cell.get_attribute("data-difference")) == pytest.approx(first["values"][1][0] - first["values"][1][1])
    cell.hover()
    brief = page.locator("#pair-brief")
    brief.wait_for(state="visible")
    assert brief.locator(".brief-head").inner_text() == f"{first['layer']}:{first['index']} · pair 2"
    assert brief.locator("mark").count() == 2  # the one token where the two prompts differ, in each
    assert rows_drawn.first.get_attribute("href") == first["url"]
    head = page.locator("#head-pattern pre.pattern")
    assert head.count() == 2 and head.first.locator(".pt").count() == len(PAIRS[0]["tokens"][0])
