"""Embeds over HTTP, from the real server, and in a real headless Chromium, on the hand-built atlases
(``tests/lm_fixture.py``, ``tests/vision_fixture.py``).

What it proves: ``?embed=1`` on a unit page is the unit alone (a language unit's contexts, a vision unit's pictures)
and on a circuit page the circuit's graph alone, without header, navigation or footer, with a link to the whole page;
the whole page offers a copy-paste ``<iframe>`` snippet that, pasted into another page in Chromium, shows that (the
graph drawn); ``true`` works as ``1``, ``0`` and ``false`` give the whole page, other values are a 400 saying which
exist; twins and pages without an embed view are unchanged.
"""

from __future__ import annotations

import html
import re

import httpx
import pytest

from tests.lm_fixture import (  # noqa: F401 (lm_atlas, lm_server: fixtures)
    NEURON, NOT_FOUND_TASK, SLUG as LM_SLUG, TASK, lm_atlas, lm_server,
)
from tests.vision_fixture import FOCUS, SLUG as VISION_SLUG, vision_atlas, vision_server  # noqa: F401 (fixtures)

UNIT = f"/models/{LM_SLUG}/{NEURON[0]}/{NEURON[1]}"
VISION_UNIT = f"/models/{VISION_SLUG}/{FOCUS[0]}/{FOCUS[1]}"
QUOTE = f"/models/{LM_SLUG}/circuits/{TASK}"
CHROME = ('<header', '<footer', 'class="crumbs"', 'class="search-box"', 'id="embed-code"')
SNIPPET = re.compile(r'<textarea id="embed-code"[^>]*>([^<]*)</textarea>')


def fetch(server: str, path: str) -> httpx.Response:
    answer = httpx.get(f"{server}{path}", timeout=30)
    assert answer.status_code == 200, answer.text[:500]
    return answer


def assert_embed_of(body: str, url: str) -> None:
    """An embed view: no chrome, links opening outside the frame, and a link to the whole page."""
    assert not [part for part in CHROME if part in body]
    assert '<body class="embed">' in body and '<base target="_blank">' in body
    assert f'<p class="embed-source muted"><a href="{url}">' in body


def snippet_of(body: str) -> str:
    return html.unescape(SNIPPET.search(body)[1])


def test_a_language_units_embed_is_its_contexts_alone(lm_server: str):
    body = fetch(lm_server, f"{UNIT}?embed=1").text
    assert_embed_of(body, UNIT)
    assert 'id="top-contexts"' in body and 'id="random-contexts"' in body
    assert not [section for section in ('id="activation"', 'id="logit-effects"', 'id="edges-in"', 'id="circuits"')
                if section in body]
    whole = fetch(lm_server, UNIT).text
    assert '<header class="top">' in whole and 'id="activation"' in whole
    assert snippet_of(whole).startswith(f'<iframe src="{UNIT}?embed=1" ')
    assert f'id="embed-preview" href="{UNIT}?embed=1"' in whole


def test_a_vision_units_embed_is_its_pictures_alone(vision_server: str):
    body = fetch(vision_server, f"{VISION_UNIT}?embed=1").text
    assert_embed_of(body, VISION_UNIT)
    assert 'id="feature-visualisation"' in body and body.count('<figure class="unit-image">') == 1
    assert 'id="top-examples"' not in body and 'id="weights"' not in body


def test_a_circuits_embed_is_its_graph_alone(lm_server: str):
    body = fetch(lm_server, f"{QUOTE}?embed=1").text
    assert_embed_of(body, QUOTE)
    assert 'id="circuit-graph"' in body and 'id="circuit-data"' in body and "/static/circuit.js" in body
    assert 'id="evidence"' not in body and 'id="curve"' not in body and 'id="verdict"' not in body
    assert snippet_of(fetch(lm_server, QUOTE).text).startswith(f'<iframe src="{QUOTE}?embed=1" ')
    none = fetch(lm_server, f"/models/{LM_SLUG}/circuits/{NOT_FOUND_TASK}?embed=1").text  # no graph: its verdict
    assert_embed_of(none, f"/models/{LM_SLUG}/circuits/{NOT_FOUND_TASK}")
    assert 'id="circuit-graph"' not in none and 'class="verdict"' in none


def test_embed_values_twins_and_pages_without_an_embed_view(lm_server: str):
    assert fetch(lm_server, f"{UNIT}?embed=true").text == fetch(lm_server, f"{UNIT}?embed=1").text
    whole = fetch(lm_server, UNIT).text
    assert fetch(lm_server, f"{UNIT}?embed=0").text == whole == fetch(lm_server, f"{UNIT}?embed=false").text
    for bad in ("2", "yes", "TRUE", ""):
        answer = httpx.get(f"{lm_server}{UNIT}", params={"embed": bad}, timeout=30)
        assert answer.status_code == 400 and "is neither 1 (or true" in answer.text, bad
    assert fetch(lm_server, f"{UNIT}.json?embed=1").json() == fetch(lm_server, f"{UNIT}.json").json()
    layer = f"/models/{LM_SLUG}/{NEURON[0]}"  # a layer page has no embed view: whole, and no snippet
    assert fetch(lm_server, f"{layer}?embed=1").text == fetch(lm_server, layer).text
    assert 'id="embed-code"' not in fetch(lm_server, layer).text


@pytest.fixture(scope="module")
def quote_twin(lm_server: str) -> dict:
    return fetch(lm_server, f"{QUOTE}.json").json()


def test_pasted_snippets_show_the_unit_and_draw_the_graph_in_chromium(page, lm_server: str, quote_twin: dict):
    page.goto(f"{lm_server}{UNIT}", wait_until="load")
    snippet = page.locator("#embed-code").input_value()  # made absolute by the page's script
    assert snippet.startswith(f'<iframe src="{lm_server}{UNIT}?embed=1" ')
    page.set_content(f"<p>A paper's figure:</p>{snippet}")
    frame = page.frame_locator("iframe")
    frame.locator("#top-contexts").wait_for(timeout=15_000)
    assert frame.locator("header").count() == 0 and frame.locator(".ctx").count() > 0

    page.goto(f"{lm_server}{QUOTE}", wait_until="load")
    page.set_content(page.locator("#embed-code").input_value())
    page.wait_for_function("() => document.querySelector('iframe').contentWindow.circuitGraph !== undefined",
                           timeout=15_000)
    graph = page.frames[1]
    assert graph.locator("#circuit-graph canvas").count() > 0 and graph.locator("header").count() == 0
    drawn = graph.evaluate("() => window.circuitGraph.nodes('.unit').length")
    assert drawn == len(quote_twin["nodes"]) + len(quote_twin["embeddings"])
