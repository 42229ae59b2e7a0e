"""Task-circuit pages over HTTP, from the real server serving the hand-built LM atlas (``tests/lm_fixture.py``): a
circuit's page and twin (nodes with briefs, every edge, derived residual links, logit reads, curve, evidence,
examples, config), the verdict and evidence for a circuit found, not found, and found where the full model does not
solve the task, the flags where a circuit is unfaithful on held-out pairs or beats the full model, the cap on the
edges a dense circuit's graph draws, the comparison of models per task, the list of tasks, the circuit-tracer
download, the links between circuits and unit and model pages, an atlas older than the evidence, a circuit being
computed, and the 404s."""

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
from store.keys import CardKey, CircuitKey, LayerKind
from store.lock import writer_lock
from store.schema import Circuit, Layer, Model, Run, Unit
from tests.lm_fixture import (  # noqa: F401 (lm_atlas, lm_server: fixtures)
    CANDIDATES, CARD, DENSE_BRACKET_BEST, DENSE_BRACKET_FULL, DENSE_CARD, DENSE_EDGES, DENSE_HELDOUT, DENSE_LOSS,
    DENSE_SET_NODES, DENSE_SLUG, FAITHLESS_FULL, FAITHLESS_HELDOUT, FAITHLESS_INTERVAL, FAITHLESS_NODES,
    FAITHLESS_NULL, FAITHLESS_TASK, KNOWN_PEAK, KNOWN_TOKENS, NEURON, NOT_FOUND_BEST, NOT_FOUND_CURVE, NOT_FOUND_FULL,
    NOT_FOUND_TASK, QUERY, QUOTE_CALIBRATION, QUOTE_CONFIG, QUOTE_CURVE, QUOTE_EDGES, QUOTE_EXAMPLES,
    QUOTE_FAITHFULNESS, QUOTE_LOGITS, QUOTE_NODES, QUOTE_NULL, QUOTE_RESIDUAL, QUOTE_SIZES, SLUG, TARGET,
    TASK, TOP_MAX, dense_nodes, lm_atlas, lm_server,
)
from tests.test_server import assert_twin

QUOTE = f"/models/{SLUG}/circuits/{TASK}"
DENSE = f"/models/{DENSE_SLUG}/circuits/{TASK}"
FAITHLESS = f"/models/{SLUG}/circuits/{FAITHLESS_TASK}"
NOT_FOUND = f"/models/{SLUG}/circuits/{NOT_FOUND_TASK}"
DENSE_BRACKET = f"/models/{DENSE_SLUG}/circuits/{FAITHLESS_TASK}"
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
    assert body["candidates"] == [{"token": token, "column": 17, "tracer_id": f"17_{place}_5"}
                                  for place, token in enumerate(CANDIDATES)]

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

    assert (body["status"], body["best_loss"], body["best_k"], body["full_solves"]) == ("found", 0.14, 15, True)
    assert body["verdict"].startswith("Found at the target: 15 nodes and 10 edges reach task loss 0.14")
    rows = {row["key"]: row for row in body["evidence"]}
    assert list(rows) == ["full", "circuit_mean", "circuit_zero", "ablated_mean", "all_ablated", "null"]
    for key in ("full", "circuit_mean", "circuit_zero", "ablated_mean", "all_ablated"):
        assert rows[key]["recorded"] and rows[key]["loss"] == QUOTE_FAITHFULNESS[key]["loss"], key
    assert rows["all_ablated"]["accuracy"] == 0.5 and body["faithfulness"]["all_ablated"]["agreement"] == 0.52
    assert rows["null"]["loss"] == QUOTE_NULL["loss"] and rows["null"]["note"].startswith("not found")
    assert body["null"] == {**QUOTE_NULL, "full": {**QUOTE_NULL["full"], "agreement": None}}
    assert body["beats_full"]["flag"] is False and body["beats_full"]["interval"] == 0.031
    assert body["beats_full"]["margin"] == pytest.approx(-0.02)
    assert [s["chosen"] for s in body["sweep"]["settings"]] == [False, True, False] and body["sweep"]["chosen"] == 1
    assert body["sweep"]["settings"][1]["k"] == 15 and body["calibration"] == QUOTE_CALIBRATION
    assert (body["job"], body["writer_active"]) == (None, False)


def test_a_node_brief_says_what_its_unit_does(client: httpx.Client):
    """A node's brief has its unit's statistics; its contexts are the unit twin's, which the graph fetches on hover."""
    nodes = {(n["layer"], n["index"]): n for n in client.get(QUOTE + ".json").json()["nodes"]}
    brief = nodes[NEURON]["brief"]
    assert brief == {"density": 0.12, "max": TOP_MAX, "top_tokens": [" <", "\n", "né"]}
    assert nodes[QUERY]["brief"]["density"] == 0.25
    assert nodes[f"0.{LayerKind.ATTN_IN}", 1]["brief"] is None  # not measured
    top = client.get(nodes[NEURON]["json_url"]).json()["contexts"]["top"]
    assert top[0]["activation"] == TOP_MAX and top[0]["tokens"] == KNOWN_TOKENS and top[0]["position"] == KNOWN_PEAK


def test_circuit_page_shows_header_graph_curve_faithfulness_examples_and_config(client: httpx.Client):
    body = client.get(QUOTE + ".json").json()
    page = client.get(QUOTE).text
    text = text_of(page)
    assert f"<h1>{TASK}" in page and "found at target" in text and 'id="flag-' not in page
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

    curve = page[page.index('id="curve"'):page.index('id="evidence"')]
    assert curve.count("<circle ") == len(QUOTE_CURVE) and curve.count('class="chosen"') == 2  # the point and line
    assert "k = 15" in curve and "target 0.15" in curve and "log scale" in curve
    table = page.index('id="evidence-table"')
    evidence = page[table:page.index("</table>", table)]
    assert "above target" in evidence and 'id="evidence-circuit_zero" class="over"' in evidence
    assert 'id="evidence-circuit_mean">' in evidence and "91.0%" in evidence
    for key in ("full", "circuit_mean", "circuit_zero", "ablated_mean", "all_ablated", "null"):
        assert f'id="evidence-{key}"' in evidence
    assert "all ablated (k = 0)" in evidence and "weight-shuffled model, seed 7" in evidence
    assert ("not found; loss on the pruning pairs; the shuffled model itself: loss 0.71, accuracy 49%"
            in text_of(evidence))
    assert "does not beat the full model beyond noise" in text and "±0.031 at 400 pairs" in text
    assert 'id="flag-beats-full"' not in page and 'class="verdict" id="verdict"' in page
    sweep = page[page.index('id="sweep-table"'):page.index("</table>", page.index('id="sweep-table"'))]
    assert sweep.count("<tr") == 4 and sweep.count('class="chosen"') == 1 and "chosen" in text_of(sweep)
    assert "at k = 15: scale 1.25, shift -0.03; all ablated (k = 0): scale 0.2, shift 0.01; the circuit alone, " \
           "zero-ablated: scale 0.9, shift 0.1." in text and "4 min 11 s" in text
    examples = page[page.index('id="examples"'):page.index('id="config"')]
    assert "&#34;a</span>" not in examples and '<span class="pt">&lt;</span>' in examples  # tokens escaped, kept apart
    assert examples.count('class="tok neg"') == 1  # the circuit's one wrong choice
    assert "k coef" in text and "1 min 24 s" in text


def test_a_circuit_not_found_shows_the_best_loss_and_no_nodes(client: httpx.Client):
    """No k met the target: the page says "not found" with the best loss reached, and never shows a set of nodes (let
    alone the whole model) as the circuit; the curve and the evidence still show."""
    body = assert_twin(client, NOT_FOUND)
    assert (body["status"], body["met"], body["n_nodes"], body["n_edges"]) == ("not_found", False, 0, 0)
    assert (body["best_loss"], body["best_k"], body["full_solves"]) == (*NOT_FOUND_BEST, True)
    assert body["verdict"] == "Not found: best loss 0.31 at k = 40, target 0.15. No number of nodes met the target."
    assert body["nodes"] == body["embeddings"] == body["edges"] == body["residual"] == body["logits"] == []
    assert body["drawn_edges"] == 0 and [[p["k"], p["loss"]] for p in body["curve"]] == NOT_FOUND_CURVE
    rows = {row["key"]: row for row in body["evidence"]}
    assert rows["full"]["loss"] == NOT_FOUND_FULL["loss"] and rows["all_ablated"]["recorded"]
    assert all(not rows[key]["recorded"] and rows[key]["note"] == "no circuit found"
               for key in ("circuit_mean", "circuit_zero", "ablated_mean"))
    assert rows["null"]["recorded"] and body["beats_full"] is None and body["sweep"]["chosen"] is None
    page = client.get(NOT_FOUND).text
    text = text_of(page)
    assert "not found" in text and "Not found: best loss 0.31 at k = 40, target 0.15." in text
    assert 'id="graph"' not in page and 'id="nodes"' not in page and 'id="node-table"' not in page
    assert "circuit.js" not in page and "graph.json" not in page and "edges (nonzero weights)" not in text
    assert 'id="curve"' in page and "best k = 40" in page and 'id="evidence-table"' in page
    assert "No setting found a circuit at the target." in text and "no circuit found" in text

    graph = client.get(f"{NOT_FOUND}/graph.json").json()  # the download keeps no nodes either
    assert [n["feature_type"] for n in graph["nodes"]] == ["logit", "logit"] and graph["links"] == []
    assert graph["metadata"]["info"]["met"] is False and graph["metadata"]["info"]["n_nodes"] == 0


def test_a_full_model_that_misses_the_target_is_said_plainly(client: httpx.Client):
    """Found on the pruning pairs, but the full model does not solve the task, and the circuit alone beats it beyond
    the interval; the dense model's, not found, says both."""
    body = client.get(FAITHLESS + ".json").json()
    assert (body["status"], body["full_solves"]) == ("found", False)
    assert body["verdict"].endswith("The full model does not solve this task (held-out loss 0.55 > target 0.15, "
                                    "accuracy 71%).")
    assert body["beats_full"]["flag"] is True and body["beats_full"]["interval"] == FAITHLESS_INTERVAL
    assert body["beats_full"]["margin"] == pytest.approx(FAITHLESS_FULL["loss"] - FAITHLESS_HELDOUT)
    assert body["null"]["met"] is True and body["null"]["k"] == FAITHLESS_NULL["k"]
    rows = {row["key"]: row for row in body["evidence"]}
    assert rows["null"]["note"].startswith("found: 5 nodes, 3 edges")
    page = client.get(FAITHLESS).text
    text = text_of(page)
    assert "full model does not solve the task" in text and 'class="flag" id="verdict"' in page
    assert 'id="flag-beats-full"' in page and "beats the full model beyond noise" in text
    assert "0.14 lower (0.41 against 0.55), more than the 95% interval of ±0.06 at 400 pairs" in text
    assert 'id="flag-heldout"' in page and f"task loss {FAITHLESS_HELDOUT} on pairs" in text
    assert 'id="evidence-full" class="over"' in page  # the full model's row: above the target

    dense = client.get(DENSE_BRACKET + ".json").json()
    assert (dense["status"], dense["full_solves"], dense["n_nodes"], dense["nodes"]) == ("not_found", False, 0, [])
    assert dense["verdict"] == ("Not found: best loss 0.5 at k = 100, target 0.15. No number of nodes met the target. "
                                "The full model does not solve this task (held-out loss 0.6 > target 0.15, "
                                "accuracy 62%).")
    assert DENSE_BRACKET_BEST == (dense["best_loss"], dense["best_k"]) and DENSE_BRACKET_FULL["loss"] == 0.6


def test_a_found_circuit_unfaithful_held_out_is_flagged(client: httpx.Client):
    dense = client.get(DENSE).text
    assert 'id="flag-heldout"' in dense and f"task loss {DENSE_HELDOUT}" in text_of(dense)
    body = client.get(DENSE + ".json").json()
    assert (body["met"], body["loss"], body["heldout_loss"]) == (True, DENSE_LOSS, DENSE_HELDOUT)
    quote = client.get(QUOTE).text
    assert 'id="flag-' not in quote and "target met" not in quote and "found at target" in quote


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
    assert (models[SLUG]["n_circuits"], models[DENSE_SLUG]["n_circuits"]) == (3, 3)
    assert index["circuits"] == {"url": "/circuits", "json_url": "/circuits.json", "n_tasks": 3, "n_circuits": 6}
    page = client.get("/").text
    assert f'href="/models/{SLUG}"' in page and 'href="/circuits"' in page and "3 task circuits" in text_of(page)

    model = assert_twin(client, f"/models/{SLUG}")
    assert [(c["slug"], c["n_nodes"], c["n_edges"], c["met"], c["heldout_loss"]) for c in model["circuits"]] == [
        (FAITHLESS_TASK, 3, 2, True, FAITHLESS_HELDOUT), (NOT_FOUND_TASK, 0, 0, False, None),
        (TASK, 15, 10, True, 0.14)]
    model_page = client.get(f"/models/{SLUG}").text
    table = model_page[model_page.index('id="circuit-table"'):]
    assert f'<a href="{QUOTE}">{TASK}</a>' in table and "above target" in table


def test_comparison_page_pairs_dense_with_sparse_at_the_target(client: httpx.Client):
    body = assert_twin(client, f"/circuits/{TASK}")
    rows = {c["model"]["slug"]: c for c in body["circuits"]}
    assert set(rows) == {SLUG, DENSE_SLUG} and body["up"]["url"] == "/circuits"
    assert (rows[SLUG]["weights"], rows[SLUG]["pretraining_loss"]) == ("sparse", CARD["heldout"]["loss"])
    assert (rows[DENSE_SLUG]["weights"], rows[DENSE_SLUG]["pretraining_loss"]) == ("dense",
                                                                                   DENSE_CARD["heldout"]["loss"])
    assert (rows[DENSE_SLUG]["n_edges"], rows[DENSE_SLUG]["met"]) == (len(DENSE_EDGES), True)
    assert rows[SLUG]["url"] == QUOTE and rows[DENSE_SLUG]["heldout_loss"] == DENSE_HELDOUT
    assert rows[SLUG]["full"] == QUOTE_FAITHFULNESS["full"] and rows[SLUG]["full_solves"] is True
    assert (rows[SLUG]["status"], rows[SLUG]["said"]) == ("found", "found: 15 nodes, 10 edges")
    [pair] = body["pairs"]
    assert (pair["dense"]["slug"], pair["sparse"]["slug"]) == (DENSE_SLUG, SLUG)
    # both found at the target: compared there, at their own sizes
    assert (pair["loss"], pair["at_target"], pair["said"]) == (TARGET, True, "Both found at the target 0.15.")
    assert pair["dense_size"] == {"nodes": 144, "edges": 1024} and pair["sparse_size"] == {"nodes": 15, "edges": 10}
    assert pair["edge_ratio"] == pytest.approx(102.4) and pair["node_ratio"] == pytest.approx(144 / 15)
    assert rows[SLUG]["sizes"] == QUOTE_SIZES
    page = client.get(f"/circuits/{TASK}").text
    text = text_of(page)
    assert "102.4×" in text and "9.6×" in text and "2.350 / 2.346" in text and "1,024 / 10" in text
    assert "≤ 0.15 " in text and "not the target</span>" not in page and "0.12 / 95.0%" in text


def test_comparison_page_says_when_a_model_does_not_solve_the_task(client: httpx.Client):
    body = client.get(f"/circuits/{FAITHLESS_TASK}.json").json()
    rows = {c["model"]["slug"]: c for c in body["circuits"]}
    assert rows[SLUG]["full_solves"] is False and rows[DENSE_SLUG]["full_solves"] is False
    assert rows[SLUG]["said"] == "Fixture LM does not solve the task (loss 0.55, accuracy 71%)"
    assert rows[DENSE_SLUG]["status"] == "not_found" and rows[DENSE_SLUG]["n_nodes"] == 0
    [pair] = body["pairs"]
    assert pair["edge_ratio"] is pair["node_ratio"] is pair["loss"] is None and not pair["at_target"]
    assert pair["said"] == ("Fixture LM (dense) does not solve the task (loss 0.6, accuracy 62%); Fixture LM does not "
                            "solve the task (loss 0.55, accuracy 71%): no ratio.")
    page = client.get(f"/circuits/{FAITHLESS_TASK}").text
    text = text_of(page)
    assert "Fixture LM does not solve the task (loss 0.55, accuracy 71%)." in text
    assert f'id="unsolved-{SLUG}"' in page and f'id="unsolved-{DENSE_SLUG}"' in page
    assert "×" not in text.replace("dense ÷ sparse", "") and "no ratio" in text and "not found" in text


def test_comparison_page_says_when_a_circuit_is_not_found(client: httpx.Client):
    body = client.get(f"/circuits/{NOT_FOUND_TASK}.json").json()
    rows = {c["model"]["slug"]: c for c in body["circuits"]}
    assert (rows[SLUG]["status"], rows[SLUG]["said"]) == ("not_found", "not found: best loss 0.31 at k = 40")
    assert rows[DENSE_SLUG]["status"] == "found" and rows[DENSE_SLUG]["n_nodes"] == len(DENSE_SET_NODES)
    [pair] = body["pairs"]
    # no ratio at the target; both models solve the task, so the tightest loss both reach is given, marked
    assert (pair["loss"], pair["at_target"]) == (0.4, False)
    assert pair["said"] == ("Fixture LM: not found: best loss 0.31 at k = 40. Compared instead at 0.4, the tightest "
                            "loss both reach: not the target.")
    page = client.get(f"/circuits/{NOT_FOUND_TASK}").text
    text = text_of(page)
    assert "not found best loss 0.31 at k = 40" in text and "≤ 0.4 not the target" in text
    assert 'id="unsolved-' not in page and "does not solve the task</span>" not in page


def test_tasks_list(client: httpx.Client):
    body = assert_twin(client, "/circuits")
    assert [(t["slug"], [m["slug"] for m in t["models"]]) for t in body["tasks"]] == [
        (FAITHLESS_TASK, [SLUG, DENSE_SLUG]), (NOT_FOUND_TASK, [SLUG, DENSE_SLUG]), (TASK, [SLUG, DENSE_SLUG])]
    assert body["tasks"][2]["url"] == f"/circuits/{TASK}"
    page = client.get("/circuits").text
    assert f'<a href="/circuits/{TASK}">{TASK}</a>' in page


def test_unknown_tasks_circuits_and_models_are_404s_that_say_what_exists(client: httpx.Client):
    cases = {
        "/circuits/nope": "task 'nope' not found: circuits exist for bracket_counting, set_or_string, "
                          "single_double_quote",
        f"/models/{SLUG}/circuits/nope": f"circuit 'nope' not found in model '{SLUG}'; it has circuits for: "
                                        "bracket_counting, set_or_string, single_double_quote",
        f"/models/{SLUG}/circuits/3": f"circuit '3' not found in model '{SLUG}'; it has circuits for: "
                                     "bracket_counting, set_or_string, single_double_quote",
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
    schemas = schema["components"]["schemas"]
    assert {"nodes", "edges", "residual", "logits", "curve", "faithfulness", "examples", "config", "met", "status",
            "verdict", "evidence", "beats_full", "null", "sweep", "calibration", "best_loss",
            "full_solves"} <= set(schemas["CircuitPage"]["properties"])
    assert {"all_ablated", "beats_full", "interval"} <= set(schemas["Faithfulness"]["properties"])
    assert {"status", "full", "full_solves", "said"} <= set(schemas["TaskCircuit"]["properties"])
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


def test_an_atlas_older_than_the_evidence_still_renders(tmp_path: Path):
    """Circuits written before the evidence keys: every page answers, what is missing says "not recorded", and an old
    circuit that missed its target (stored with the best k's nodes) is shown as not found, without them."""
    from tests.lm_fixture import FAITHLESS_EDGES, add_circuit, add_model

    old_faithfulness = {key: QUOTE_FAITHFULNESS[key] for key in ("pairs", "full", "circuit_mean", "circuit_zero",
                                                                 "ablated_mean")}
    with Atlas.open_for_writing(tmp_path) as atlas, atlas.batch() as session:
        model, units = add_model(session, "old", "Old LM", "Before the evidence.", CARD)
        stray = ((f"1.{LayerKind.MLP}", 9), NEURON, 0.05)  # an edge to a node the circuit does not keep
        add_circuit(session, model, units, "quote", QUOTE_NODES, QUOTE_EDGES + [stray], 0.14,
                    {CircuitKey.TARGET: {"target": TARGET, "met": True}, CircuitKey.CURVE: QUOTE_CURVE,
                     CircuitKey.FAITHFULNESS: old_faithfulness, CircuitKey.EXAMPLES: QUOTE_EXAMPLES,
                     CircuitKey.LOGITS: QUOTE_LOGITS})
        add_circuit(session, model, units, "brackets", FAITHLESS_NODES, FAITHLESS_EDGES, 0.3,
                    {CircuitKey.TARGET: {"target": TARGET, "met": False}, CircuitKey.FAITHFULNESS: old_faithfulness})
        session.add(Circuit(model_id=model.id, slug="bare", task="bare", target_loss=TARGET, loss=0.1, n_nodes=0,
                            n_edges=0, params={}))
    client = TestClient(create_app(tmp_path))
    for path in ("/models/old/circuits/quote", "/models/old/circuits/brackets", "/models/old/circuits/bare",
                 "/circuits/quote", "/circuits/brackets", "/models/old/circuits/brackets/graph.json"):
        assert client.get(path).status_code == 200, path
        if not path.endswith("graph.json"):
            assert_twin(client, path)
    quote = client.get("/models/old/circuits/quote.json").json()
    assert (quote["status"], quote["n_nodes"], len(quote["nodes"]), quote["full_solves"]) == ("found", 15, 15, True)
    assert quote["edges"][-1] == {"src_layer": f"1.{LayerKind.MLP}", "src_index": 9, "dst_layer": NEURON[0],
                                  "dst_index": NEURON[1], "weight": 0.05}  # named all the same, weakest last
    assert quote["null"] is quote["sweep"] is quote["calibration"] is quote["faithfulness"]["all_ablated"] is None
    rows = {row["key"]: row for row in quote["evidence"]}
    assert [key for key, row in rows.items() if not row["recorded"]] == ["all_ablated", "null"]
    assert rows["null"]["note"] == rows["all_ablated"]["note"] == "not recorded"
    assert quote["beats_full"]["flag"] is None and quote["beats_full"]["statement"].startswith("Not recorded")
    text = text_of(client.get("/models/old/circuits/quote").text)
    assert text.count("not recorded") >= 2 and "Settings tried Not recorded." in text
    assert "Calibration Not recorded." in text

    brackets = client.get("/models/old/circuits/brackets.json").json()
    assert (brackets["status"], brackets["n_nodes"], brackets["nodes"], brackets["edges"]) == ("not_found", 0, [], [])
    assert brackets["verdict"].startswith("Not found: best loss 0.3 at k = 3, target 0.15.")
    page = client.get("/models/old/circuits/brackets").text
    assert 'id="node-table"' not in page and 'id="graph"' not in page
    assert client.get("/models/old/circuits/bare.json").json()["status"] == "found"


def test_a_circuit_being_computed_says_so_while_the_job_runs(tmp_path: Path):
    """A circuit the atlas lacks, which the running job is finding, answers with a page saying so (refreshing itself,
    with the job's progress); a task the job does not ask for, or once no job runs, is a 404. The index counts a
    language model's work in units, with what the job is doing now."""
    from tests.lm_fixture import add_model

    current = "circuit set_or_string: sweep step 400/2000, loss 0.21, kept 37 nodes"
    with Atlas.open_for_writing(tmp_path) as atlas, atlas.batch() as session:
        model, _ = add_model(session, "busy", "Busy LM", "Being filled.", CARD)
        session.add(Run(model_id=model.id, config={"tasks": "all", "circuits": {"target_loss": TARGET}},
                        progress={"stage": "circuits", "planned": 184, "kept": 0, "todo": 184, "done": 184,
                                  "current": current}))
    assert "set_or_string" not in CARD[CardKey.TASKS]
    with writer_lock(tmp_path):
        client = TestClient(create_app(tmp_path))
        body = assert_twin(client, "/models/busy/circuits/quote_closing")  # a task the card names: "all" asks for it
        assert (body["status"], body["writer_active"], body["target_loss"], body["loss"]) == ("computing", True,
                                                                                              TARGET, None)
        assert body["verdict"].startswith("Being computed") and body["job"]["current"] == current
        assert body["job"]["state"] == "running" and body["nodes"] == [] and body["evidence"] == []
        page = client.get("/models/busy/circuits/quote_closing").text
        assert '<meta http-equiv="refresh" content="10">' in page and "This circuit is not in the atlas yet" in page
        assert f"now {current}" in text_of(page) and "184 of 184 units" in text_of(page)
        assert client.get("/models/busy/circuits/nope.json").status_code == 404
        index = client.get("/").text
        assert "184 of 184 units" in text_of(index) and "images" not in text_of(index)
        assert f"now {current}" in text_of(index)
    client = TestClient(create_app(tmp_path))  # the job is gone (interrupted): nothing is being computed
    response = client.get("/models/busy/circuits/quote_closing.json")
    assert response.status_code == 404 and "it has no circuits" in response.json()["error"]["message"]
