"""The negative side of a language unit: its most negative contexts and its quantile bands, checked on the small real
precompute of ``tests.test_lm_precompute`` against the model's activations recomputed there (the same atlas and
activations, not a new run), and on the hand-built fixture atlas over HTTP (page and twin)."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest
import torch

from precompute.stages.contexts import ContextsConfig, layer_seed
from render.contexts import BANDS, BOTTOM, EDGE_TOKENS, PER_BAND, POOL, WINDOW, token_keys, unit_offsets
from store.keys import BandKey, ContextKey, ExampleKind, Stat
from tests.conftest import serving
from tests.lm_fixture import BANDS as FIXTURE_BANDS
from tests.lm_fixture import BOTTOM_VALUES, CHANNEL, NEURON, QUERY, SLUG, lm_atlas, lm_server  # noqa: F401
from tests.test_lm_precompute import (TOKENS, acts, close, examples, sparse_atlas,  # noqa: F401
                                      unit_stats)

# An MLP layer (post-GELU: a few small negatives) and a residual stream (both signs)
LAYERS = ("0.mlp.post_act", "1.resid_mid")


def marked(example) -> int:
    """The stream offset of an example's marked token."""
    return example.source[ContextKey.OFFSET] + example.source[ContextKey.POSITION]


@pytest.mark.parametrize("layer", LAYERS)
def test_bottom_contexts_are_the_most_negative_spans(sparse_atlas: Path, acts: dict[str, torch.Tensor], layer: str):
    """Brute force over the whole sample: each aligned span of WINDOW tokens offers its minimum, and a unit keeps the
    BOTTOM lowest below 0, lowest first, each marked at its span's minimum, with the window's values as measured.
    (A random residual stream repeats values exactly; among equal minima any span may be the one kept, as for top
    contexts, so the spans are compared by their minima.)"""
    a = acts[layer]
    negatives = 0
    for index in range(a.shape[1]):
        column = a[:, index]
        span_min = column.view(-1, WINDOW).min(dim=1).values  # [spans]
        lowest = span_min[span_min < 0].sort().values[:BOTTOM].tolist()
        bottom = examples(sparse_atlas, layer, index, ExampleKind.BOTTOM)
        assert [ex.rank for ex in bottom] == list(range(len(bottom))) and len(bottom) == len(lowest)
        assert len({marked(ex) // WINDOW for ex in bottom}) == len(bottom)  # one per span at most
        for ex, expected in zip(bottom, lowest):
            position = marked(ex)
            assert float(column[position]) == expected == float(span_min[position // WINDOW])
            assert close(ex.activation, expected)
            start = ex.source[ContextKey.OFFSET]
            window = column[start:start + len(ex.source[ContextKey.VALUES])]
            assert all(close(shown, float(v)) for shown, v in zip(ex.source[ContextKey.VALUES], window))
        negatives += len(bottom)
    assert negatives > 0  # the check saw some


@pytest.mark.parametrize("layer", LAYERS)
def test_bottom_contexts_exist_where_the_unit_goes_below_zero(sparse_atlas: Path, acts: dict[str, torch.Tensor],
                                                             layer: str):
    a = acts[layer]
    for index, stats in enumerate(unit_stats(sparse_atlas, layer)):
        bottom = examples(sparse_atlas, layer, index, ExampleKind.BOTTOM)
        assert (len(bottom) == 0) == bool(a[:, index].min() >= 0) and Stat.BANDS in stats


@pytest.mark.parametrize("layer", LAYERS)
def test_band_contexts_are_the_seeded_draw_from_their_band(sparse_atlas: Path, acts: dict[str, torch.Tensor],
                                                           layer: str):
    """Edges: the unit's quantiles over the first EDGE_TOKENS tokens; contexts: the pool's tokens inside the band,
    ranked by the unit's shifted key, the PER_BAND smallest, in stream order; shares: the pool's fractions."""
    a = acts[layer]
    seed = ContextsConfig().seed
    keys = token_keys(TOKENS, seed)
    pool = torch.nonzero(keys < POOL).flatten()
    shifts = torch.remainder(unit_offsets(a.shape[1], layer_seed(seed, layer)) + 0.5, 1.0)
    n = min(EDGE_TOKENS, TOKENS)
    drawn = 0
    for index, stats in enumerate(unit_stats(sparse_atlas, layer)):
        column = a[:, index]
        top_first = column[:n].sort(descending=True).values
        lows = [float(top_first[math.ceil(fraction * n) - 1]) for fraction in BANDS]
        bands = stats[Stat.BANDS]["bands"]
        assert [band[BandKey.LOW] for band in bands] == pytest.approx(lows)
        assert [band[BandKey.HIGH] for band in bands] == [None, *[band[BandKey.LOW] for band in bands[:-1]]]
        stored = examples(sparse_atlas, layer, index, ExampleKind.BAND)
        assert [ex.rank for ex in stored] == list(range(len(stored)))
        for number, band in enumerate(bands):
            low, high = band[BandKey.LOW], band[BandKey.HIGH]
            inside = (column[pool] >= low) & (column[pool] < (math.inf if high is None else high))
            assert band[BandKey.SHARE] == pytest.approx(float(inside.double().mean()))
            candidates = pool[inside]
            rank = torch.remainder(keys[candidates] / POOL + shifts[index], 1.0)
            expected = sorted(candidates[rank.argsort()[:PER_BAND]].tolist())
            found = [ex for ex in stored if ex.source[ContextKey.BAND] == number]
            assert [marked(ex) for ex in found] == expected
            for ex in found:  # inside the band's range, by the activation the model gives there
                value = float(column[marked(ex)])
                assert low <= value and (high is None or value < high) and close(ex.activation, value)
            drawn += len(found)
    assert drawn > 0


def test_the_precomputed_page_shows_the_negative_side(sparse_atlas: Path):
    layer, index = "1.resid_mid", 0
    with serving(sparse_atlas, "--workers", "1") as url:
        twin = httpx.get(f"{url}/models/random-sparse/{layer}/{index}.json", timeout=30).json()
        page = httpx.get(f"{url}/models/random-sparse/{layer}/{index}", timeout=30).text
    bottom = examples(sparse_atlas, layer, index, ExampleKind.BOTTOM)
    assert [c["values"] for c in twin["contexts"]["bottom"]] == [ex.source[ContextKey.VALUES] for ex in bottom]
    assert [band["label"] for band in twin["contexts"]["bands"]] == ["top 0.1%", "top 0.1–1%", "top 1–10%",
                                                                     "top 10–50%"]
    assert 'id="bottom-contexts"' in page and "Quantile bands" in page


def section(page: str, id_: str) -> str:
    start = page.index(f'id="{id_}"')
    return page[start:page.index("</section>", start)]


def test_fixture_twin_and_page_carry_bottom_contexts_and_bands(lm_server: str):
    url = f"{lm_server}/models/{SLUG}/{NEURON[0]}/{NEURON[1]}"
    contexts = httpx.get(url + ".json", timeout=30).json()["contexts"]
    assert [c["activation"] for c in contexts["bottom"]] == BOTTOM_VALUES
    bands = contexts["bands"]
    assert [(b["low"], b["high"], b["share"]) for b in bands] == [
        (b[BandKey.LOW], b[BandKey.HIGH], b[BandKey.SHARE]) for b in FIXTURE_BANDS["bands"]]
    for number, band in enumerate(bands):
        assert len(band["contexts"]) == 2 and all(c["band"] == number for c in band["contexts"])
        assert all(band["low"] <= c["activation"] and (band["high"] is None or c["activation"] < band["high"])
                   for c in band["contexts"])
    page = httpx.get(url, timeout=30).text
    bottom = section(page, "bottom-contexts")
    assert "Most negative contexts" in bottom and bottom.count('class="ctx"') == len(BOTTOM_VALUES)
    assert "-0.17" in bottom
    quantiles = section(page, "band-contexts")
    for label in ("top 0.1%", "top 0.1–1%", "top 1–10%", "top 10–50%"):
        assert label in quantiles
    assert quantiles.count('class="ctx"') == 8 and "3.9 to its max" in quantiles and "0.11%" in quantiles
    assert quantiles.count('class="t mark"') + quantiles.count('class="t minus mark"') == 8  # the token outlined


def test_a_unit_never_negative_says_so(lm_server: str):
    url = f"{lm_server}/models/{SLUG}/{QUERY[0]}/{QUERY[1]}"
    contexts = httpx.get(url + ".json", timeout=30).json()["contexts"]
    assert contexts["bottom"] == [] and contexts["bands"][1]["contexts"] == []
    page = httpx.get(url, timeout=30).text
    assert "never negative" in section(page, "bottom-contexts")
    assert "No sampled token fell in this band" in section(page, "band-contexts")


def test_an_atlas_before_bands_shows_neither(lm_server: str):
    contexts = httpx.get(f"{lm_server}/models/{SLUG}/{CHANNEL[0]}/{CHANNEL[1]}.json", timeout=30).json()["contexts"]
    assert contexts["bottom"] is None and contexts["bands"] is None and len(contexts["top"]) == 20
    page = httpx.get(f"{lm_server}/models/{SLUG}/{CHANNEL[0]}/{CHANNEL[1]}", timeout=30).text
    assert 'id="bottom-contexts"' not in page and 'id="band-contexts"' not in page
