"""Language-model pages in a real headless Chromium: a context's tokens are shaded and say their activation on hover,
script shows a token as the server does, the layer table sorts by a column head, and the jump box goes to the unit."""

from __future__ import annotations

import html
import re

import httpx

from server.templating import visible
from tests.lm_fixture import (  # noqa: F401 (lm_atlas, lm_server: fixtures)
    CHANNEL, KNOWN_NEGATIVE, KNOWN_PEAK, NEURON, ODD_TOKENS, SLUG, lm_atlas, lm_server,
)

RGBA = re.compile(r"rgba?\((\d+), (\d+), (\d+)(?:, ([0-9.]+))?\)")


def colour(css: str) -> tuple[int, int, int, float]:
    r, g, b, a = RGBA.fullmatch(css).groups()
    return int(r), int(g), int(b), float(a or 1)


def test_tokens_are_shaded_and_show_their_value_on_hover(page, lm_server: str):
    unit = f"/models/{SLUG}/{NEURON[0]}/{NEURON[1]}"
    known = httpx.get(f"{lm_server}{unit}.json", timeout=30).json()["contexts"]["top"][0]
    page.goto(lm_server + unit, wait_until="load")
    tokens = page.locator("#top-contexts .ctx").first.locator(".t")
    assert tokens.count() == len(known["tokens"])

    peak, negative = tokens.nth(KNOWN_PEAK), tokens.nth(KNOWN_NEGATIVE)
    r, g, b, alpha = colour(peak.evaluate("t => getComputedStyle(t).backgroundColor"))
    assert alpha == 1 and r > b  # the peak at full strength, warm
    r, g, b, alpha = colour(negative.evaluate("t => getComputedStyle(t).backgroundColor"))
    assert 0 < alpha < 0.2 and b > r  # a small negative value, faint and cool
    assert colour(tokens.nth(0).evaluate("t => getComputedStyle(t).backgroundColor"))[3] == 0  # zero: unshaded
    assert peak.evaluate("t => getComputedStyle(t).outlineStyle") == "solid"  # the example's token is outlined

    peak.hover()
    readout = page.locator("#top-contexts .ctx").first.locator(".readout")
    assert readout.text_content() == "␣< = 4.5" and peak.get_attribute("title") == "4.5"
    negative.hover()
    assert readout.text_content() == f"else = {known['values'][KNOWN_NEGATIVE]:.4g}"


def test_script_shows_a_token_as_the_server_does(page, lm_server: str):
    """atlas.js's visibleToken (the context readout, the circuit page's briefs) gives the text of the server's
    ``visible`` marks: whitespace as ␣ ⏎ →, bytes and invisible characters by number. The readout uses it."""
    page.goto(f"{lm_server}/models/{SLUG}/{CHANNEL[0]}/{CHANNEL[1]}", wait_until="load")
    in_script = page.evaluate("tokens => tokens.map(window.atlascope.visibleToken)", ODD_TOKENS)
    assert in_script == [html.unescape(re.sub(r"<[^>]+>", "", visible(token))) for token in ODD_TOKENS]
    assert "<0x13>" in in_script and "<U+200B>" in in_script and "␣␣␣␣" in in_script
    context = page.locator("#top-contexts .ctx").first
    control = context.locator(".t").nth(ODD_TOKENS.index("\x13"))
    control.hover()
    assert context.locator(".readout").text_content() == f"<0x13> = {control.get_attribute('title')}"


def test_layer_table_sorts_and_jumps(page, lm_server: str):
    layer = f"/models/{SLUG}/{NEURON[0]}"
    by_density = httpx.get(f"{lm_server}{layer}.json", params={"sort": "density"}, timeout=30).json()
    page.goto(lm_server + layer, wait_until="load")
    rows = page.locator(".units-table tbody tr td:first-child a")
    assert [int(i) for i in rows.all_text_contents()] == list(range(len(by_density["units"])))

    page.locator(".units-table th a", has_text="density").click()
    page.wait_for_url(lm_server + by_density["url"])
    assert [int(i) for i in rows.all_text_contents()] == [u["index"] for u in by_density["units"]]

    page.fill("#jump-unit", str(NEURON[1]))
    page.keyboard.press("Enter")
    page.wait_for_url(f"{lm_server}{layer}/{NEURON[1]}")
    assert page.locator("#top-contexts").is_visible()
