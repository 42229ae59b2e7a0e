"""Task-circuit pages over HTTP, from the real server serving the hand-built LM atlas (``tests/lm_fixture.py``): a
circuit's page and twin (nodes with briefs, every edge, derived residual links, logit reads, curve, faithfulness,
examples, config), the flags where a circuit misses its target or is unfaithful on held-out pairs, the cap on the
edges a dense circuit's graph draws, the comparison of models per task, the list of tasks, the circuit-tracer
download, the links between circuits and unit and model pages, and the 404s."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from store import Atlas
from store.keys import CircuitKey, LayerKind
from store.schema import Circuit, Layer, Model, Unit
from tests.lm_fixture import (  # noqa: F401 (lm_atlas, lm_server: fixtures)
    CANDIDATES, CARD, DENSE_CARD, DENSE_EDGES, DENSE_HELDOUT, DENSE_LOSS, DENSE_SLUG, FAITHLESS_HELDOUT,
    FAITHLESS_NODES, FAITHLESS_TASK, KNOWN_PEAK, KNOWN_TOKENS, NEURON, QUERY, QUOTE_CONFIG, QUOTE_CURVE, QUOTE_EDGES,
    QUOTE_EXAMPLES, QUOTE_FAITHFULNESS, QUOTE_LOGITS, QUOTE_NODES, QUOTE_RESIDUAL, QUOTE_SIZES, DENSE_SIZES, SLUG,
    TARGET, TASK, TOP_MAX,
    dense_nodes, lm_atlas, lm_server,
)
from tests.test_server import assert_twin

QUOTE = f"/models/{SLUG}/circuits/{TASK}"
DENSE = f"/models/{DENSE_SLUG}/circuits/{TASK}"
FAITHLESS = f"/models/{SLUG}/circuits/{FAITHLESS_TASK}"
EMBEDDING = f"0.{LayerKind.RESID_PRE}"


@pytest.fixture(scope="module")
def client(lm_server: str):
    with httpx.Client(base_url=lm_server, timeout=30) as client:
        yield client


def graph_data(page: str) -> dict:
    """The JSON the page's graph is drawn from."""
    found = re.search(r'<script type="application/json" id="circuit-data">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def test_circuit_twin_has_every_node_edge_and_link(client: httpx.Client):
    body = assert_twin(client, QUOTE)
    assert (body["slug"], body["task"], body["target_loss"], body["loss"]) == (TASK, TASK, TARGET, 0.14)
    assert (body["met"], body["heldout_loss"], body["n_nodes"], body["n_edges"]) == (True, 0.14, 15, 10)
    assert body["model"]["slug"] == SLUG and body["model"]["url"] == f"/models/{SLUG}"
    assert body["compare"] == {"url": f"/circuits/{TASK}", "json_url": f"/circuits/{TASK}.json"}
    assert body["download"]["url"] == f"{QUOTE}/graph.json"

    nodes = {(n["layer"], n["index"]): n for n in body["nodes"]}
    assert {key: n["tau"] for key, n in nodes.items()} == QUOTE_NODES
    assert [n["column"] for n in body["nodes"]] == sorted(n["column"] for n in body["nodes"])  # forward order
    assert nodes[f"0.{LayerKind.ATTN_IN}", 1]["column"] == 1 and nodes[NEURON]["column"] == 7
    assert nodes[f"1.{LayerKind.MLP_OUT}", 0]["column"] == 16
    assert all(n["url"] == f"/models/{SLUG}/{n['layer']}/{n['index']}" for n in body["nodes"])
    assert [(n["layer"], n["index"], n["column"], n["tau"]) for n in body["embeddings"]] == [
        (EMBEDDING, c, 0, None) for c in (1, 4, 5, 6)]
    assert body["candidates"] == [{"token": token, "column": 17} for token in CANDIDATES]

    edges = [((e["src_layer"], e["src_index"]), (e["dst_layer"], e["dst_index"]), e["weight"]) for e in body["edges"]]
    assert sorted(edges) == sorted(QUOTE_EDGES) and body["drawn_edges"] == len(QUOTE_EDGES)
    assert [abs(w) for _, _, w in edges] == sorted((abs(w) for _, _, w in edges), reverse=True)
    assert {(r["src_layer"], r["dst_layer"], r["index"]) for r in body["residual"]} == QUOTE_RESIDUAL
    assert len(body["residual"]) == len(QUOTE_RESIDUAL) and body["logits"] == QUOTE_LOGITS

    assert [[p["k"], p["loss"]] for p in body["curve"]] == QUOTE_CURVE
    assert body["trace"][1] == {"step": 10, "task_loss": 0.69, "kept": 283}
    assert body["faithfulness"]["circuit_mean"] == QUOTE_FAITHFULNESS["circuit_mean"]
    assert body["faithfulness"]["full"] == {**QUOTE_FAITHFULNESS["full"], "agreement": None}
    assert body["examples"] == QUOTE_EXAMPLES and body["config"] == QUOTE_CONFIG


def test_a_node_brief_says_what_its_unit_does(client: httpx.Client):
    nodes = {(n["layer"], n["index"]): n for n in client.get(QUOTE + ".json").json()["nodes"]}
    brief = nodes[NEURON]["brief"]
    assert (brief["density"], brief["max"], brief["top_tokens"]) == (0.12, TOP_MAX, [" <", "\n", "né"])
    assert len(brief["contexts"]) == 3 and brief["contexts"][0]["activation"] == TOP_MAX
    known = brief["contexts"][0]  # the neuron's strongest context, cut to 8 tokens before its peak and 3 after
    assert known["tokens"] == KNOWN_TOKENS[KNOWN_PEAK - 8:KNOWN_PEAK + 4] and known["position"] == 8
    assert all(len(c["tokens"]) <= 12 for c in brief["contexts"])
    assert nodes[QUERY]["brief"]["density"] == 0.25
    assert nodes[f"0.{LayerKind.ATTN_IN}", 1]["brief"] is None  # not measured


def test_circuit_page_shows_header_graph_curve_faithfulness_examples_and_config(client: httpx.Client):
    body = client.get(QUOTE + ".json").json()
    page = client.get(QUOTE).text
    text = text_of(page)
    assert f"<h1>{TASK}" in page and "target met" in text and 'id="flag-' not in page
    assert "10 edges (nonzero weights)" in text and "15 nodes" in text and "(target 0.15)" in text
    assert f'href="/models/{SLUG}"' in page and f'href="/circuits/{TASK}"' in page
    assert f'href="{QUOTE}/graph.json" download=' in page
    assert "all 10 edges are drawn" in text

    graph = graph_data(page)  # the graph draws what the twin says, without fetching anything
    assert graph["nodes"] == body["embeddings"] + body["nodes"] and graph["edges"] == body["edges"]
    assert (graph["residual"], graph["logits"], graph["candidates"]) == (body["residual"], body["logits"],
                                                                        body["candidates"])
    for script in ("/static/vendor/cytoscape/cytoscape.min.js", "/static/vendor/cytoscape-dagre/cytoscape-dagre.min.js",
                   "/static/circuit.js"):
        assert f'<script src="{script}" defer></script>' in page and client.get(script).status_code == 200
    for licence in ("cytoscape/LICENSE", "cytoscape-dagre/LICENSE", "cytoscape-dagre/LICENSE.dagre"):
        assert "Permission is hereby granted" in client.get(f"/static/vendor/{licence}").text

    curve = page[page.index('id="curve"'):page.index('id="faithfulness"')]
    assert curve.count("<circle ") == len(QUOTE_CURVE) and curve.count('class="chosen"') == 2  # the point and line
    assert "k = 15" in curve and "target 0.15" in curve and "log scale" in curve
    table = page.index('id="faithfulness-table"')
    faithfulness = page[table:page.index("</table>", table)]
    assert "above target" in faithfulness and 'id="faithfulness-circuit_zero" class="over"' in faithfulness
    assert 'id="faithfulness-circuit_mean">' in faithfulness and "91.0%" in faithfulness
    examples = page[page.index('id="examples"'):page.index('id="config"')]
    assert "&#34;a</span>" not in examples and '<span class="pt">&lt;</span>' in examples  # tokens escaped, kept apart
    assert examples.count('class="tok neg"') == 1  # the circuit's one wrong choice
    assert "k coef" in text and "1 min 24 s" in text


def test_a_circuit_that_misses_its_target_is_flagged(client: httpx.Client):
    dense = client.get(DENSE).text
    assert 'id="flag-target"' in dense and "Target not met." in dense and "target not met" in dense
    assert 'id="flag-heldout"' in dense and f"task loss {DENSE_HELDOUT}" in text_of(dense)
    body = client.get(DENSE + ".json").json()
    assert (body["met"], body["loss"], body["heldout_loss"]) == (False, DENSE_LOSS, DENSE_HELDOUT)
    faithless = client.get(FAITHLESS).text
    assert 'id="flag-heldout"' in faithless and 'id="flag-target"' not in faithless
    assert f"task loss {FAITHLESS_HELDOUT} on pairs" in text_of(faithless)


def test_a_dense_circuit_draws_its_strongest_edges_and_lists_them_all(client: httpx.Client):
    body = client.get(DENSE + ".json").json()
    assert body["n_edges"] == len(body["edges"]) == len(DENSE_EDGES) > body["drawn_edges"] == 300
    assert len(body["nodes"]) == body["n_nodes"] == len(dense_nodes())
    weights = [abs(e["weight"]) for e in body["edges"]]
    assert weights == sorted(weights, reverse=True)
    page = client.get(DENSE).text
    assert "the 300 strongest of 1,024 edges are drawn" in text_of(page)
    drawn = graph_data(page)["edges"]
    assert drawn == body["edges"][:300] and min(abs(e["weight"]) for e in drawn) >= weights[300]


def test_every_node_links_to_a_unit_page_that_lists_the_circuit(client: httpx.Client):
    body = client.get(QUOTE + ".json").json()
    page = client.get(QUOTE).text
    for node in body["nodes"] + body["embeddings"]:
        assert client.get(node["url"]).status_code == 200
    for node in body["nodes"]:
        assert f'<a href="{node["url"]}">{node["layer"]}:{node["index"]}</a>' in page
        unit = client.get(node["json_url"]).json()
        listed = {c["slug"]: c for c in unit["circuits"]}
        assert listed[TASK]["tau"] == node["tau"] and listed[TASK]["url"] == QUOTE
    neuron = client.get(f"/models/{SLUG}/{NEURON[0]}/{NEURON[1]}.json").json()
    assert [(c["slug"], c["tau"]) for c in neuron["circuits"]] == [(FAITHLESS_TASK, FAITHLESS_NODES[NEURON]),
                                                                    (TASK, QUOTE_NODES[NEURON])]
    assert neuron["circuits"][0]["heldout_loss"] == FAITHLESS_HELDOUT and neuron["circuits"][1]["met"]
    unit_page = client.get(f"/models/{SLUG}/{NEURON[0]}/{NEURON[1]}").text
    circuits = unit_page[unit_page.index('<section id="circuits">'):]
    assert f'<a href="{QUOTE}">{TASK}</a>' in circuits and f'<a href="{FAITHLESS}">{FAITHLESS_TASK}</a>' in circuits
    assert "0.95" in circuits


def test_unit_connections_leave_out_circuit_edges(client: httpx.Client):
    """A read channel whose only weights are circuit edges has no connections of the model's own."""
    read = client.get(f"/models/{SLUG}/0.{LayerKind.ATTN_IN}/1.json").json()
    assert read["edges"]["out"] == {"total": 0, "shown": []} and read["circuits"][0]["slug"] == TASK


def test_index_to_model_to_circuit_in_two_clicks(client: httpx.Client):
    index = assert_twin(client, "/")
    models = {m["slug"]: m for m in index["models"]}
    assert (models[SLUG]["n_circuits"], models[DENSE_SLUG]["n_circuits"]) == (2, 1)
    assert index["circuits"] == {"url": "/circuits", "json_url": "/circuits.json", "n_tasks": 2, "n_circuits": 3}
    page = client.get("/").text
    assert f'href="/models/{SLUG}"' in page and 'href="/circuits"' in page and "2 task circuits" in text_of(page)

    model = assert_twin(client, f"/models/{SLUG}")
    assert [(c["slug"], c["n_nodes"], c["n_edges"], c["met"], c["heldout_loss"]) for c in model["circuits"]] == [
        (FAITHLESS_TASK, 3, 2, True, FAITHLESS_HELDOUT), (TASK, 15, 10, True, 0.14)]
    model_page = client.get(f"/models/{SLUG}").text
    table = model_page[model_page.index('id="circuit-table"'):]
    assert f'<a href="{QUOTE}">{TASK}</a>' in table and "above target" in table


def test_comparison_page_pairs_dense_with_sparse(client: httpx.Client):
    body = assert_twin(client, f"/circuits/{TASK}")
    rows = {c["model"]["slug"]: c for c in body["circuits"]}
    assert set(rows) == {SLUG, DENSE_SLUG} and body["up"]["url"] == "/circuits"
    assert (rows[SLUG]["weights"], rows[SLUG]["pretraining_loss"]) == ("sparse", CARD["heldout"]["loss"])
    assert (rows[DENSE_SLUG]["weights"], rows[DENSE_SLUG]["pretraining_loss"]) == ("dense",
                                                                                   DENSE_CARD["heldout"]["loss"])
    assert (rows[DENSE_SLUG]["n_edges"], rows[DENSE_SLUG]["met"]) == (len(DENSE_EDGES), False)
    assert rows[SLUG]["url"] == QUOTE and rows[DENSE_SLUG]["heldout_loss"] == DENSE_HELDOUT
    [pair] = body["pairs"]
    assert (pair["dense"]["slug"], pair["sparse"]["slug"]) == (DENSE_SLUG, SLUG)
    # the dense circuit missed the target: both are compared at the tightest loss both reach, not at their k
    assert (pair["loss"], pair["at_target"]) == (0.3, False)
    assert pair["dense_size"] == {"nodes": 128, "edges": 900} and pair["sparse_size"] == {"nodes": 8, "edges": 5}
    assert pair["edge_ratio"] == pytest.approx(900 / 5) and pair["node_ratio"] == pytest.approx(128 / 8)
    assert rows[SLUG]["sizes"] == QUOTE_SIZES and rows[DENSE_SLUG]["sizes"] == DENSE_SIZES
    text = text_of(client.get(f"/circuits/{TASK}").text)
    assert "180.0×" in text and "16.0×" in text and "2.351 / 2.346" in text and "not met" in text
    assert "≤ 0.3 not the target" in text and "900 / 5" in text

    faithless = client.get(f"/circuits/{FAITHLESS_TASK}.json").json()
    assert [c["model"]["slug"] for c in faithless["circuits"]] == [SLUG] and faithless["pairs"] == []
    assert "No dense and weight-sparse pair" in client.get(f"/circuits/{FAITHLESS_TASK}").text


def test_tasks_list(client: httpx.Client):
    body = assert_twin(client, "/circuits")
    assert [(t["slug"], [m["slug"] for m in t["models"]]) for t in body["tasks"]] == [
        (FAITHLESS_TASK, [SLUG]), (TASK, [SLUG, DENSE_SLUG])]
    assert body["tasks"][1]["url"] == f"/circuits/{TASK}"
    page = client.get("/circuits").text
    assert f'<a href="/circuits/{TASK}">{TASK}</a>' in page


def test_unknown_tasks_circuits_and_models_are_404s_that_say_what_exists(client: httpx.Client):
    cases = {
        "/circuits/nope": "task 'nope' not found: circuits exist for bracket_counting, single_double_quote",
        f"/models/{SLUG}/circuits/nope": f"circuit 'nope' not found in model '{SLUG}'; it has circuits for: "
                                        "bracket_counting, single_double_quote",
        f"/models/{DENSE_SLUG}/circuits/{FAITHLESS_TASK}": f"circuit '{FAITHLESS_TASK}' not found in model "
                                                          f"'{DENSE_SLUG}'; it has circuits for: {TASK}",
        f"/models/{SLUG}/circuits/3": f"circuit '3' not found in model '{SLUG}'; it has circuits for: "
                                     "bracket_counting, single_double_quote",
        f"/models/nope/circuits/{TASK}": "model 'nope' not found",
    }
    for path, message in cases.items():
        for url in (path, path + ".json"):
            response = client.get(url, headers={"Accept": "application/json"})
            assert response.status_code == 404 and response.json()["error"]["message"] == message, url
        page = client.get(path)
        assert page.status_code == 404 and message in html.unescape(page.text)
    graph = client.get(f"/models/{SLUG}/circuits/nope/graph.json")
    assert graph.status_code == 404 and "circuit 'nope' not found" in graph.json()["error"]["message"]


def test_circuit_tracer_download_is_a_valid_graph(client: httpx.Client):
    response = client.get(f"{QUOTE}/graph.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    graph = response.json()
    assert set(graph) == {"metadata", "qParams", "nodes", "links"}
    meta = graph["metadata"]
    assert (meta["slug"], meta["scan"], meta["schema_version"]) == (f"{SLUG}-{TASK}", SLUG, 1)
    assert meta["prompt_tokens"] == QUOTE_EXAMPLES[0]["tokens"] and meta["prompt"] == "".join(meta["prompt_tokens"])
    assert meta["info"]["url"] == QUOTE and meta["transcoder_list"] == []
    assert {"pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"} <= set(graph["qParams"])

    types = {"node_id": str, "feature": int, "layer": str, "ctx_idx": int, "feature_type": str, "jsNodeId": str,
             "clerp": str, "token_prob": float, "is_target_logit": bool}
    for node in graph["nodes"]:
        for key, kind in types.items():
            assert isinstance(node[key], kind), (key, node)
        assert node.get("influence") is None or isinstance(node["influence"], float)
        assert node.get("activation") is None or isinstance(node["activation"], float)
        assert node["ctx_idx"] == len(meta["prompt_tokens"]) - 1
    ids = [node["node_id"] for node in graph["nodes"]]
    assert len(ids) == len(set(ids)) and len({n["jsNodeId"] for n in graph["nodes"]}) == len(ids)
    assert all(link["source"] in ids and link["target"] in ids and isinstance(link["weight"], float)
               for link in graph["links"])
    assert set(graph["qParams"]["pinnedIds"]) <= set(ids)

    by_type: dict[str, list[dict]] = {}
    for node in graph["nodes"]:
        by_type.setdefault(node["feature_type"], []).append(node)
    assert sorted(n["feature"] for n in by_type["embedding"]) == [1, 4, 5, 6]
    assert all(n["layer"] == "E" for n in by_type["embedding"])
    assert len(by_type["cross layer transcoder"]) == len(QUOTE_NODES)
    neuron = next(n for n in by_type["cross layer transcoder"] if n["clerp"].startswith(f"{NEURON[0]}:{NEURON[1]} "))
    assert neuron["feature"] == NEURON[1] and neuron["layer"] == "7" and "' <'" in neuron["clerp"]
    logits = by_type["logit"]
    assert [n["is_target_logit"] for n in logits] == [token == QUOTE_EXAMPLES[0]["correct"] for token in CANDIDATES]
    assert sum(n["token_prob"] for n in logits) == pytest.approx(1) and max(n["token_prob"] for n in logits) == 0.93
    assert len(graph["links"]) == len(QUOTE_EDGES) + len(QUOTE_RESIDUAL) + len(QUOTE_LOGITS)
    weights = sorted(link["weight"] for link in graph["links"])
    assert weights == sorted([w for _, _, w in QUOTE_EDGES] + [1.0] * len(QUOTE_RESIDUAL)
                             + [read["weight"] for read in QUOTE_LOGITS])


def test_openapi_documents_the_circuit_routes(client: httpx.Client):
    schema = client.get("/openapi.json").json()
    for path in ("/circuits", "/circuits.json", "/circuits/{task}", "/circuits/{task}.json",
                 "/models/{model}/circuits/{task}", "/models/{model}/circuits/{task}.json",
                 "/models/{model}/circuits/{task}/graph.json"):
        assert path in schema["paths"], path
    fields = schema["components"]["schemas"]["CircuitPage"]["properties"]
    assert {"nodes", "edges", "residual", "logits", "curve", "faithfulness", "examples", "config", "met"} <= set(fields)
    tracer = schema["components"]["schemas"]["TracerGraph"]["properties"]
    assert {"metadata", "qParams", "nodes", "links"} <= set(tracer)


def test_a_layer_named_circuits_keeps_its_unit_urls(tmp_path: Path):
    """``/models/{model}/circuits/{n}`` is a unit when the model has a layer named ``circuits``; names stay circuits."""
    with Atlas.open_for_writing(tmp_path) as atlas, atlas.batch() as session:
        model = Model(slug="odd", title="Odd", kind="language", card={})
        session.add(model)
        session.flush()
        layer = Layer(model_id=model.id, name="circuits", position=0, kind="conv", n_units=2, shape=[2])
        session.add(layer)
        session.flush()
        session.add_all(Unit(layer_id=layer.id, index=i, stats={}) for i in range(2))
        session.add(Circuit(model_id=model.id, slug="quote", task="quote", target_loss=TARGET, loss=0.1, n_nodes=0,
                            n_edges=0, params={CircuitKey.TARGET: {"target": TARGET, "met": True}}))
    client = TestClient(create_app(tmp_path))
    unit = client.get("/models/odd/circuits/1.json").json()
    assert (unit["layer"]["name"], unit["index"]) == ("circuits", 1)
    assert "unit 1" in client.get("/models/odd/circuits/1").text
    assert client.get("/models/odd/circuits/2.json").json()["error"]["message"].startswith("unit 2 out of range")
    assert client.get("/models/odd/circuits.json").json()["layer"]["name"] == "circuits"
    circuit = client.get("/models/odd/circuits/quote.json").json()
    assert circuit["slug"] == "quote" and circuit["nodes"] == [] and circuit["met"]
    assert "keeps no nodes" in client.get("/models/odd/circuits/quote").text
