"""The circuit page's graph in a real headless Chromium: the vendored library draws every node in its column, a dense
circuit draws only its strongest weights, hovering a node shows its unit's brief (its contexts fetched from the unit's
twin), and a click opens the unit's page."""

from __future__ import annotations

import httpx
import pytest

from tests.lm_fixture import (  # noqa: F401 (lm_atlas, lm_server: fixtures)
    DENSE_SLUG, KNOWN_PEAK, KNOWN_TOKENS, NEURON, SLUG, TASK, lm_atlas, lm_server,
)

QUOTE = f"/models/{SLUG}/circuits/{TASK}"
NODE_ID = f"{NEURON[0]}:{NEURON[1]}"  # the graph's id of a unit node


def open_graph(page, server: str, path: str) -> None:
    page.goto(server + path, wait_until="load")
    page.wait_for_function("() => window.circuitGraph !== undefined", timeout=15_000)


def point_at(page, node_id: str) -> None:
    """Move the mouse onto a node the library drew on its canvas."""
    at = page.evaluate(f"() => window.circuitGraph.getElementById({node_id!r}).renderedPosition()")
    box = page.locator("#circuit-graph").bounding_box()
    page.mouse.move(box["x"] + at["x"], box["y"] + at["y"])


@pytest.fixture(scope="module")
def twin(lm_server: str) -> dict:
    return httpx.get(f"{lm_server}{QUOTE}.json", timeout=30).json()


def test_the_library_draws_every_node_in_its_column(page, lm_server: str, twin: dict):
    open_graph(page, lm_server, QUOTE)
    assert page.locator("#circuit-graph canvas").count() > 0  # cytoscape's drawing surface
    drawn = page.evaluate("""() => window.circuitGraph.nodes().not('.header').map(n => ({
        id: n.id(), column: n.data('column'), x: n.position('x'), y: n.position('y'),
        visible: n.visible(), inside: n.renderedPosition('x') >= 0 && n.renderedPosition('y') >= 0 }))""")
    expected = {f"{n['layer']}:{n['index']}" for n in twin["nodes"] + twin["embeddings"]}
    expected |= {f"logit:{c['token']}" for c in twin["candidates"]}
    assert {n["id"] for n in drawn} == expected and all(n["visible"] and n["inside"] for n in drawn)
    columns: dict[int, set[float]] = {}
    for node in drawn:
        columns.setdefault(node["column"], set()).add(round(node["x"], 3))
    assert all(len(xs) == 1 for xs in columns.values())  # one x per column
    xs = [xs.pop() for _, xs in sorted(columns.items())]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)  # columns left to right in forward order
    edges = page.evaluate("""() => ['weight', 'residual', 'readout'].map(
        kind => window.circuitGraph.edges('.' + kind).length)""")
    assert edges == [len(twin["edges"]), len(twin["residual"]), len(twin["logits"])]
    assert page.evaluate("() => window.circuitGraph.nodes('.header').map(n => n.data('label'))")[0] == "embedding"


def test_a_dense_circuit_draws_its_strongest_weights(page, lm_server: str):
    open_graph(page, lm_server, f"/models/{DENSE_SLUG}/circuits/{TASK}")
    assert page.evaluate("() => window.circuitGraph.edges('.weight').length") == 300
    assert page.locator("#graph-note").inner_text().startswith("144 nodes")


def test_hovering_a_node_shows_its_brief_and_fetches_its_contexts(page, lm_server: str):
    open_graph(page, lm_server, QUOTE)
    brief = page.locator("#node-brief")
    assert brief.is_hidden()
    point_at(page, NODE_ID)
    brief.wait_for(state="visible")
    text = brief.inner_text()
    assert text.startswith(NODE_ID) and "tau 0.95" in text and "density 12.00% · max 4.5" in text
    brief.locator("li").nth(2).wait_for()  # the contexts, fetched from the unit's twin
    assert brief.locator("li").count() == 3 and brief.locator(".brief-loading").count() == 0
    first = brief.locator("li").first
    assert first.locator("mark").inner_text() == KNOWN_TOKENS[KNOWN_PEAK].replace(" ", "␣")
    shown = "".join(KNOWN_TOKENS[KNOWN_PEAK - 8:KNOWN_PEAK + 4]).replace(" ", "␣").replace("\n", "⏎")
    assert first.locator("code").inner_text() == shown  # 8 tokens before the peak, it, and 3 after
    page.mouse.move(2, 2)
    brief.wait_for(state="hidden")


def test_clicking_a_node_opens_its_unit_page(page, lm_server: str):
    open_graph(page, lm_server, QUOTE)
    point_at(page, NODE_ID)
    page.mouse.down()
    page.mouse.up()
    page.wait_for_url(f"{lm_server}/models/{SLUG}/{NEURON[0]}/{NEURON[1]}")
    assert page.locator(f'#circuits a[href="{QUOTE}"]').first.is_visible()
