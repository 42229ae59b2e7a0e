"""Language stage ``contexts``: for every unit of the chosen layers, in one pass of the model over the held-out token
sample (``render.contexts``), its activation statistics, histogram and quantile bands (``units.stats``), its top and
bottom contexts, a few random ones and a few from each band (``examples``). Counted in units.

A layer is pending while any of its units lacks ``Stat.BANDS`` (all of them with --force), the last thing the stage
learnt to write, so an atlas made before bottom contexts and bands gains them on its next run; the pending layers share
one pass, and each layer is saved in its own transaction as soon as the pass is over. The pass is deterministic (the
random draws are seeded per layer), so an interrupted run's next run writes what an uninterrupted one would have.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from precompute.registry import LayerSpec
from precompute.stages import Job, Plan
from precompute.stages.tokens import token_texts_for
from render.contexts import BANDS, WINDOW, Examples, LayerContexts, one_pass, unit_offsets
from store.keys import BandKey, ContextKey, ExampleKind, Stat
from store.schema import Example, Layer, Unit

CONTEXT = 128  # tokens the model reads together in the pass (its block size, if shorter): Neuronpedia's length
# Activations one batch of the pass holds per buffer (tokens x units): the pass keeps five buffers of it (the hooks'
# outputs, their side-by-side copy and three scratch ones), so this caps its memory at 20 GiB however many units a
# model has. An organism (64 x 128 x 6,912 values) is far below it; a released model with hundreds of thousands of
# units reads fewer sequences at a time, as many on every run that chooses the same layers (so a resumed run
# measures what an uninterrupted one would)
BATCH_VALUES = 2 ** 30
TOP_TOKENS = 5
DIGITS = 4  # significant digits of the activations shown in a window


@dataclass(frozen=True)
class ContextsConfig:
    tokens: int | None = None  # tokens of the held-out sample to read, from its start; None: all of it
    batch: int = 64  # sequences per forward pass
    seed: int = 0  # for the random contexts


@dataclass(frozen=True)
class LayerWork:
    layer: LayerSpec

    @property
    def label(self) -> str:
        return self.layer.name


@dataclass(frozen=True)
class Sample:
    """The token sample as the pass read it, for turning its results into rows."""

    context: int  # tokens the model read together
    texts: list[str]  # each token's stored text (``store.tokens``), by offset
    document_starts: np.ndarray  # [D] int64
    document_names: list[str]


class ContextsStage:
    name = "contexts"

    def __init__(self, job: Job, layers: list[LayerSpec], config: ContextsConfig):
        self.job, self.layers, self.config = job, layers, config
        self.sample: Sample | None = None

    def plan(self, session: Session) -> Plan:
        measured = dict(session.execute(
            select(Layer.name, func.count(Unit.id)).join(Unit)
            .where(Layer.model_id == self.job.model_id, func.json_extract(Unit.stats, f"$.{Stat.BANDS}").is_not(None))
            .group_by(Layer.name)).all())
        pending = [LayerWork(layer) for layer in self.layers
                   if self.job.force or measured.get(layer.name, 0) < layer.units]
        planned = sum(layer.units for layer in self.layers)
        return Plan(pending, planned=planned, kept=planned - sum(item.layer.units for item in pending))

    def run(self, items: list[LayerWork]) -> Iterator[tuple[LayerWork, LayerContexts]]:
        spec, net = self.job.spec, self.job.net
        held = spec.dataset_sample()
        context = min(CONTEXT, net.config.block_size) // WINDOW * WINDOW
        n = min(self.config.tokens or len(held.tokens), len(held.tokens)) // context * context
        tokens = torch.from_numpy(held.tokens[:n].astype(np.int64))
        starts = np.array([start for _, start in held.documents], dtype=np.int64)
        self.sample = Sample(context, token_texts_for(spec)(tokens.tolist()), starts,
                             [name for name, _ in held.documents])
        hooks = net.hook_points()
        layers = {item.layer.name: hooks[item.layer.module] for item in items}
        offsets = {item.layer.name: unit_offsets(item.layer.units, layer_seed(self.config.seed, item.layer.name))
                   for item in items}
        units = sum(layer.units for layer in self.layers)  # the run's choice, not what is pending: the same batch
        batch = max(1, min(self.config.batch, BATCH_VALUES // (context * units)))
        found = one_pass(net, layers, tokens, context, batch, torch.from_numpy(starts), offsets,
                         self.config.seed, lambda done: self.job.report(f"pass: {done:,} of {n:,} tokens"))
        for item in items:
            yield item, found[item.layer.name]

    def save(self, session: Session, item: LayerWork, found: LayerContexts) -> int:
        unit_ids = self.job.unit_ids(session, item.layer.name)
        stats = dict(session.execute(select(Unit.id, Unit.stats).where(Unit.id.in_(unit_ids.values()))).all())
        top, bottom, random = self._windows(found.top), self._windows(found.bottom), self._windows(found.random)
        bands = [self._windows(band) for band in found.bands]
        nonzero, total = found.nonzero.tolist(), found.sum.tolist()
        highest, lowest = found.max.tolist(), found.min.tolist()
        band_low, band_share = found.band_low.tolist(), found.band_share.tolist()
        n = found.tokens
        examples, units = [], []
        for index, unit_id in unit_ids.items():
            peaks = [window[ContextKey.TOKENS][window[ContextKey.POSITION]] for window in top[index]]
            histogram_edges, counts = found.histogram.unit(index)
            units.append({"id": unit_id, "stats": {
                **stats[unit_id],
                Stat.DENSITY: nonzero[index] / n, Stat.MEAN: total[index] / n, Stat.MAX: highest[index],
                Stat.MIN: lowest[index], Stat.N: n,
                Stat.MEASURE: f"the unit's activation at every token of {n:,} held-out tokens, read "
                              f"{self.sample.context} at a time",
                Stat.HISTOGRAM: {"edges": histogram_edges, "counts": counts, "clipped": 0},
                Stat.TOP_TOKENS: [text for text, _ in Counter(peaks).most_common(TOP_TOKENS)],
                Stat.BANDS: {"measured_on": found.edge_tokens, "pool": found.pool_tokens,
                             "bands": _bands(band_low[index], band_share[index])},
            }})
            in_bands = [{**window, ContextKey.BAND: band} for band, windows in enumerate(bands)
                        for window in windows[index]]
            for kind, windows in ((ExampleKind.TOP, top[index]), (ExampleKind.BOTTOM, bottom[index]),
                                  (ExampleKind.RANDOM, random[index]), (ExampleKind.BAND, in_bands)):
                examples += [{"unit_id": unit_id, "kind": kind, "rank": rank,
                              "activation": window[ContextKey.VALUES][window[ContextKey.POSITION]], "source": window}
                             for rank, window in enumerate(windows)]
        session.execute(delete(Example).where(Example.unit_id.in_(unit_ids.values()), Example.kind.in_(
            [ExampleKind.TOP, ExampleKind.BOTTOM, ExampleKind.RANDOM, ExampleKind.BAND])))
        if examples:
            session.execute(insert(Example), examples)
        session.execute(update(Unit), units)
        return len(unit_ids)

    def _windows(self, found: Examples) -> list[list[dict[str, Any]]]:
        """Each unit's filled slots, in order, as ``ContextKey`` windows: token texts and shown values."""
        sample = self.sample
        positions, starts, lengths = found.position.tolist(), found.start.tolist(), found.length.tolist()
        values = _shown(found.window).tolist()
        document = np.searchsorted(sample.document_starts, found.start.cpu().numpy(), side="right") - 1  # [U, k]
        return [[{ContextKey.TOKENS: sample.texts[start:start + length], ContextKey.VALUES: shown[:length],
                  ContextKey.POSITION: position - start, ContextKey.DOCUMENT: sample.document_names[doc],
                  ContextKey.OFFSET: start}
                 for position, start, length, shown, doc in zip(*unit) if position >= 0]
                for unit in zip(positions, starts, lengths, values, document.tolist())]


def _bands(low: list[float], share: list[float]) -> list[dict[str, Any]]:
    """One unit's ``Stat.BANDS`` bands from its edges and shares ([len(BANDS)] each), highest first."""
    return [{BandKey.ABOVE: above, BandKey.WITHIN: within, BandKey.LOW: low[band],
             BandKey.HIGH: low[band - 1] if band else None, BandKey.SHARE: share[band]}
            for band, (above, within) in enumerate(zip((0.0, *BANDS), BANDS))]


def layer_seed(seed: int, layer: str) -> int:
    """The seed of a layer's random contexts: the run's seed and the layer's name, so a layer draws the same
    contexts whichever other layers share its pass."""
    return zlib.crc32(f"{seed}:{layer}".encode())


def _shown(values: torch.Tensor) -> torch.Tensor:
    """Values rounded to ``DIGITS`` significant digits, in float64 so they print as short decimals: what a reader
    sees, at a third of the JSON."""
    values = values.double()
    exponent = torch.floor(torch.log10(values.abs().clamp(min=1e-30)))
    scale = torch.pow(10.0, DIGITS - 1 - exponent)
    return torch.round(values * scale) / scale

