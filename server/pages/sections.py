"""The sections of a language-model unit's page, one small function each, from what the job stored for the unit.

They read the store's keys (``store.keys``) and return the twin's shapes (``server.twins``): only the keys the twin
documents are passed on, so a key the job adds later is ignored until a page learns to show it, rather than failing
the page. A section without data is ``None``, and its part of the page is left out.
"""

from __future__ import annotations

from typing import Any

from store.keys import BandKey, ContextKey, ExampleKind, Stat

SUMMARY = (Stat.DENSITY, Stat.MEAN, Stat.MAX, Stat.MIN, Stat.N, Stat.MEASURE)
EFFECT_KEYS = ("token", "id", "value")
WINDOW = (ContextKey.TOKENS, ContextKey.VALUES, ContextKey.POSITION, ContextKey.DOCUMENT, ContextKey.OFFSET)


def is_window(source: dict[str, Any]) -> bool:
    """Whether an example's payload is a token window (a language model's) rather than an image crop's provenance."""
    return ContextKey.TOKENS in source


def activation(stats: dict[str, Any]) -> dict[str, Any] | None:
    """Density, mean, extremes, the histogram of nonzero values and the top tokens; None until measured."""
    if Stat.DENSITY not in stats:
        return None
    return {**{key: stats.get(key) for key in SUMMARY}, "histogram": histogram(stats.get(Stat.HISTOGRAM)),
            "top_tokens": stats.get(Stat.TOP_TOKENS) or []}


def histogram(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    if not stored:
        return None
    return {"edges": stored["edges"], "counts": stored["counts"], "clipped": stored.get("clipped", 0)}


def logit_effects(stats: dict[str, Any]) -> dict[str, Any] | None:
    """The tokens the unit's output direction promotes and suppresses; None for units that write no residual."""
    effects = stats.get(Stat.LOGIT_EFFECTS)
    if not effects:
        return None
    return {side: [{key: effect[key] for key in EFFECT_KEYS} for effect in effects.get(side, [])]
            for side in ("promoted", "suppressed")}


def contexts(windows: list[tuple[str, int, float, dict[str, Any]]], stats: dict[str, Any]) -> dict[str, Any] | None:
    """Top, bottom, random and quantile-band token windows, from ``(kind, rank, activation, source)`` rows in rank
    order, with the scale their shading is relative to: the unit's largest |activation|, so that both signs share one
    scale. Bottom contexts and bands are None in an atlas made before the job measured them (no ``Stat.BANDS``)."""
    if not windows:
        return None
    found: dict[str, list[dict[str, Any]]] = {kind: [] for kind in ExampleKind}
    for kind, rank, value, source in windows:
        if kind in found:
            found[kind].append({"rank": rank, "activation": value, **{key: source.get(key) for key in WINDOW},
                                "band": source.get(ContextKey.BAND)})
    extremes = [abs(v) for v in (stats.get(Stat.MAX), stats.get(Stat.MIN)) if v is not None]
    extremes += [abs(v) for group in found.values() for window in group for v in window[ContextKey.VALUES]]
    measured = stats.get(Stat.BANDS)
    return {"scale": max(extremes, default=0.0) or 1.0, "top": found[ExampleKind.TOP],
            "bottom": found[ExampleKind.BOTTOM] if measured else None, "random": found[ExampleKind.RANDOM],
            "bands": bands(measured, found[ExampleKind.BAND]) if measured else None}


def bands(measured: dict[str, Any], windows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The quantile bands, highest first, each with its label, edges, share and its own contexts."""
    return [{"label": band_label(band[BandKey.ABOVE], band[BandKey.WITHIN]), "above": band[BandKey.ABOVE],
             "within": band[BandKey.WITHIN], "low": band[BandKey.LOW], "high": band[BandKey.HIGH],
             "share": band[BandKey.SHARE], "contexts": [window for window in windows if window["band"] == index]}
            for index, band in enumerate(measured["bands"])]


def band_label(above: float, within: float) -> str:
    """``top 0.1%`` for the top band, ``top 0.1-1%`` for the others."""
    return f"top {above * 100:g}–{within * 100:g}%" if above else f"top {within * 100:g}%"
