"""One pass over a token stream that gathers, for every unit of many layers at once, what the unit's page shows: its
strongest contexts and its most negative ones, a few random ones where it is active, a few from each quantile band of
its activation, its density, mean, extremes and a histogram of its nonzero values.

Activations are handled in the house's shape, [batch, units, positions]: a language model's hooks give [batch,
positions, width] per layer; ``one_pass`` lays the layers side by side into one buffer (the pass's only copy of them)
and hands its transposed view, [batch, units, positions], to one ``ContextStats`` for all units. Every step is a
whole-tensor operation over units and positions, so a batch costs a fixed handful of operations however many units
and layers there are, and no Python loop ever visits a token or a unit:

- top contexts: each aligned span of ``WINDOW`` tokens keeps only its maximum (one ``amax`` over the span axis), so
  the contexts kept are never copies of one spot; the spans whose maximum beats a unit's worst kept context are the
  only candidates (one ``topk`` over the spans' maxima), and they enter the unit's kept set (``render.kept``), where
  only the entrants' argmax and windows are looked up;
- bottom contexts: the same, on each span's minimum with the sign flipped (a ``Kept`` of the largest -activation),
  so only spans whose minimum is below 0 and below a unit's least negative kept one are candidates; a unit never
  negative keeps none;
- random contexts: every token has a seeded random key fixed by its offset; the tokens whose key is below ``POOL``
  form a random pool (1/16 of the stream). Each unit ranks the pool's tokens where it is nonzero by the key shifted
  by a random offset of its own (mod 1) and keeps the ``RANDOM`` smallest: a uniform draw without replacement from
  its nonzero tokens (the pool is chosen blind to the activations), different for every unit. Only the pool tokens
  that could still beat a unit's kept ones are looked at (one arc of the pool sorted by key), so the draw costs a
  few hundred lookups a batch once the pass is under way. A unit nonzero on fewer than about 16 x ``RANDOM`` tokens
  may get fewer; its top contexts then show most of what it does anyway;
- quantile bands (``BANDS``, as OpenAI's circuit viewer shows them: the top 0.1%, 1%, 10% and 50% of a unit's
  activations): the band edges are each unit's quantiles over the first ``EDGE_TOKENS`` tokens of the first batch
  (exact quantiles of the whole stream would need a second pass or every value kept); every band then draws
  ``PER_BAND`` tokens from the random pool whose activation lies in it, as random contexts are drawn (smallest
  shifted key first; the shift is the unit's offset plus a half turn, so the bands do not pick the random contexts'
  tokens), and counts the pool tokens that fell in it, which says what share of the stream each band really holds;
- density, mean, min, max: one reduction each (the nonzero count comes out of the histogram);
- histogram of the nonzero values: ``render.histogram``, exact and unclipped.

Each kept context carries the unit's activation at every token of a ``WINDOW``-token window around the marked token
(``BEFORE`` of them before it where possible), gathered from the batch's activations when the context enters the
kept set, so the values are exactly those the pass measured; entrants grow rare as the pass goes on, so this costs
little. A window stays inside the model's context (the sequence, whose tokens the model saw together) and inside the
marked token's document; at an edge it shifts, and it is shorter only where the document's part of the sequence is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from render.histogram import Histograms, StreamingHistogram
from render.hooks import activations
from render.kept import WINDOW, Examples, Kept  # WINDOW: also the span of which top contexts keep one maximum

BEFORE = 24  # tokens before the marked one, where the sequence and the document allow
TOP = 20
BOTTOM = 10
RANDOM = 5
POOL = 1 / 16  # fraction of tokens random contexts (and band contexts) are drawn from
# Quantile bands: the top fractions of a unit's activations whose low edges bound them, highest band first; band i
# holds the activations between the top BANDS[i - 1] (0 for the first) and the top BANDS[i]
BANDS = (0.001, 0.01, 0.1, 0.5)
PER_BAND = 3
EDGE_TOKENS = 4096  # tokens of the first batch the band edges are measured on: 4 quantiles of a unit cost a sort


@dataclass(frozen=True)
class LayerContexts:
    """What one pass found for every unit of a layer (or of all layers, before ``one_pass`` splits them)."""

    tokens: int  # tokens measured
    nonzero: torch.Tensor  # [U] int64: tokens where the unit is not 0
    sum: torch.Tensor  # [U] float64
    max: torch.Tensor  # [U]
    min: torch.Tensor  # [U]
    histogram: Histograms  # of the nonzero values
    top: Examples  # the highest positive activations, one per WINDOW-token span at most, highest first
    bottom: Examples  # the most negative activations, likewise, lowest first; score: minus the activation
    random: Examples  # uniformly drawn tokens where the unit is nonzero, in stream order
    bands: tuple[Examples, ...]  # per band of BANDS: uniformly drawn pool tokens in the band, in stream order
    band_low: torch.Tensor  # [U, len(BANDS)] each band's low edge (band i's high edge is band i - 1's low)
    band_share: torch.Tensor  # [U, len(BANDS)] float64: fraction of the pool's tokens in each band
    edge_tokens: int  # tokens the edges were measured on
    pool_tokens: int  # tokens of the pool the shares count

    def __getitem__(self, units: slice) -> LayerContexts:
        return LayerContexts(self.tokens, self.nonzero[units], self.sum[units], self.max[units], self.min[units],
                             self.histogram[units], self.top[units], self.bottom[units], self.random[units],
                             tuple(band[units] for band in self.bands), self.band_low[units], self.band_share[units],
                             self.edge_tokens, self.pool_tokens)


class Scratch:
    """Named buffers reused by every batch: a fresh tensor of activation size pays its page faults each time (about
    5x the cost of the operation that fills it, measured on the CPU)."""

    def __init__(self):
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A buffer of that shape and dtype; its contents are unspecified."""
        n = int(torch.Size(shape).numel())
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < n or buffer.dtype != dtype or buffer.device != device:
            buffer = self._buffers[name] = torch.empty(n, dtype=dtype, device=device)
        return buffer[:n].view(shape)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block's operations on one thread. The bookkeeping on small tensors (kept contexts, histogram ranges)
    gains nothing from a parallel region and, on a machine whose other core is busy, waits for it: a [4864, 40]
    multiply took 0.035 ms on one thread and 5.9 ms on two while another process kept the second core busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def token_keys(n: int, seed: int) -> torch.Tensor:
    """A uniform random key in [0, 1) per token offset: [n] float64 (float32 would give some tokens equal keys).
    Fixed by the seed, so every run draws the same pool."""
    return torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def unit_offsets(units: int, seed: int) -> torch.Tensor:
    """Each unit's random shift of the pool's keys: [units] float64, fixed by the seed."""
    return torch.rand(units, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


class ContextStats:
    """Running statistics and kept contexts of ``offsets.numel()`` units over a stream of token sequences."""

    def __init__(self, offsets: torch.Tensor, document_starts: torch.Tensor, top: int = TOP, random: int = RANDOM):
        device = offsets.device
        units = len(offsets)
        self.offsets, self.k_top, self.k_random = offsets, top, random  # offsets: [U] from unit_offsets
        # the documents' first offsets and a sentinel past any stream: a token's document is [start, next start)
        self.documents = torch.cat([document_starts.to(device, torch.int64),
                                    torch.tensor([torch.iinfo(torch.int64).max], device=device)])
        self.scratch = Scratch()
        self.tokens = 0
        self.sum = torch.zeros(units, dtype=torch.float64, device=device)
        self.max = torch.full((units,), -torch.inf, device=device)
        self.min = torch.full((units,), torch.inf, device=device)
        self.histogram = StreamingHistogram(units, device)
        self.top = Kept(units, top, largest=True, device=device, dtype=torch.float32)
        self.bottom = Kept(units, BOTTOM, largest=True, device=device, dtype=torch.float32)  # by -activation
        self.random = Kept(units, random, largest=False, device=device, dtype=torch.float64)
        self.bands = [Kept(units, PER_BAND, largest=False, device=device, dtype=torch.float64) for _ in BANDS]
        self.band_offsets = torch.remainder(offsets + 0.5, 1.0)  # [U]
        self.band_low: torch.Tensor | None = None  # [U, len(BANDS)], from the first batch
        self.edge_tokens = self.pool_tokens = 0
        self.band_count = torch.zeros(units, len(BANDS), dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, acts: torch.Tensor, first: torch.Tensor, keys: torch.Tensor) -> None:
        """Add a batch: ``acts`` [B, U, T] (best a view of a [B, T, U] tensor: that is the layout worked on),
        ``first`` [B] int64 the stream offset of each sequence's first token, ``keys`` [B, T] the tokens'
        ``token_keys``. T must be a multiple of ``WINDOW``."""
        batch, units, length = acts.shape
        if length % WINDOW:
            raise ValueError(f"sequences of {length} tokens: need a multiple of {WINDOW}")
        x = acts.transpose(1, 2).contiguous()  # [B, T, U]: no copy when acts is a view of one
        flat = x.view(-1, units)  # [N, U], row b * T + t
        spans = x.view(batch, length // WINDOW, WINDOW, units)
        span_max = spans.amax(dim=2).view(-1, units)  # [spans, U]; span j is rows j * W ... j * W + W - 1
        span_min = spans.amin(dim=2).view(-1, units)  # [spans, U]
        low, high = span_min.amin(dim=0), span_max.amax(dim=0)  # [U] each
        if self.band_low is None:
            self._measure_band_edges(flat)

        scratch = lambda name, dtype: self.scratch.get(name, x.shape, dtype, x.device)  # noqa: E731
        nonzero = torch.ne(x, 0, out=scratch("nonzero", torch.float32))  # [B, T, U] 1.0 where nonzero
        with one_thread():
            self.histogram.cover(low, high)
        self.histogram.add(x, nonzero, scratch("slots", torch.float32), scratch("bins", torch.int32))
        self.tokens += batch * length
        self.sum += x.sum(dim=(0, 1)).double()
        pooled = torch.nonzero(keys.reshape(-1) < POOL).flatten()  # [P] rows of ``flat`` in the pool
        with one_thread():
            self.max, self.min = torch.maximum(self.max, high), torch.minimum(self.min, low)
            self._offer_extreme(self.top, span_max, 1, flat, length, first)
            self._offer_extreme(self.bottom, -span_min, -1, flat, length, first)
            self._offer_random(flat, pooled, keys, length, first)
            self._offer_bands(flat, pooled, keys, length, first)

    def _measure_band_edges(self, flat: torch.Tensor) -> None:
        """Each band's low edge: per unit, the activation ranked ``ceil(fraction x n)``-th from the top among the
        first ``EDGE_TOKENS`` rows of ``flat`` [N, U] (n of them)."""
        sample = flat[:EDGE_TOKENS].T.contiguous()  # [U, n]: kthvalue runs along contiguous rows
        n = sample.shape[1]
        self.edge_tokens = n
        self.band_low = torch.stack([sample.kthvalue(n + 1 - math.ceil(fraction * n), dim=1).values
                                     for fraction in BANDS], dim=1)  # [U, len(BANDS)]

    def _offer_extreme(self, kept: Kept, span_score: torch.Tensor, sign: int, flat: torch.Tensor, length: int,
                       first: torch.Tensor) -> None:
        """Top (``sign`` 1) or bottom (-1) contexts: ``span_score`` [spans, U] is each span's maximum of sign x
        activation. Only spans above a unit's worst kept context (and above 0) can enter: look at as many spans as
        the unit with the most such spans has."""
        k = int((span_score > kept.bar().clamp(min=0)).sum(dim=0).max().clamp(max=kept.k))
        if k:
            score, span = span_score.T.topk(k, dim=1)  # [U, k]
            kept.offer(score, self._offset(span * WINDOW, length, first), span,
                       lambda units, spans: self._fetch(flat, length, first, units,
                                                        self._peak(flat, units, spans, sign)))

    def _offer_bands(self, flat: torch.Tensor, pooled: torch.Tensor, keys: torch.Tensor, length: int,
                     first: torch.Tensor) -> None:
        """Each band's candidates are the pool's tokens in the band, ranked by (key / POOL + band offset) mod 1: the
        ``PER_BAND`` smallest of each unit enter its band's kept set. The pool is a sixteenth of the batch, so this
        looks at [P, U] values, not the batch's [N, U]."""
        if not len(pooled):
            return
        values = flat.index_select(0, pooled)  # [P, U]
        rank = torch.remainder(keys.reshape(-1)[pooled, None] / POOL + self.band_offsets, 1.0)  # [P, U] float64
        # a token's band: the first whose low edge it reaches (edges fall with the band), len(BANDS) for none
        band = len(BANDS) - (values[..., None] >= self.band_low).sum(dim=2)  # [P, U]
        self.pool_tokens += len(pooled)
        take = min(PER_BAND, len(pooled))
        for index, kept in enumerate(self.bands):
            inside = band == index  # [P, U]
            self.band_count[:, index] += inside.sum(dim=0)
            drawn, at = torch.where(inside, rank, torch.inf).T.topk(take, dim=1, largest=False)  # [U, take]
            rows = pooled[at]
            kept.offer(drawn, self._offset(rows, length, first), rows,
                       lambda units, at: self._fetch(flat, length, first, units, at))

    def _offer_random(self, flat: torch.Tensor, pooled: torch.Tensor, keys: torch.Tensor, length: int,
                      first: torch.Tensor) -> None:
        """A unit's key for a pool token is (key / POOL - its offset) mod 1, so the tokens that could beat its
        worst kept key form one arc of the pool sorted by key: two binary searches per unit find it, and only the
        arcs' tokens are looked at (all of them, in one flat list: a unit still short of contexts looks at the
        whole pool, one that has them at a token or two). ``pooled`` [P]: the rows of ``flat`` in the pool."""
        if not len(pooled):
            return
        pool_keys, order = torch.sort(keys.reshape(-1)[pooled] / POOL)  # [P] in [0, 1)
        around = torch.cat([pool_keys, pool_keys + 1])  # [2P]: an arc may wrap past 1
        start = torch.searchsorted(around, self.offsets)  # [U] the first token at or after the unit's offset
        reach = torch.searchsorted(around, self.offsets + self.random.bar().clamp(max=1.0)) - start  # [U] arc length
        units = torch.arange(len(self.offsets), device=start.device)
        unit = units.repeat_interleave(reach)  # [A] one entry per token of every arc
        place = start[unit] + torch.arange(len(unit), device=unit.device) - (reach.cumsum(0) - reach)[unit]
        rows = pooled[order[place % len(pooled)]]
        found = flat.view(-1).take(rows * flat.shape[1] + unit) != 0
        unit, rows, rank = unit[found], rows[found], (around[place] - self.offsets[unit])[found]  # rank in [0, 1)
        ranked = torch.argsort(unit + rank)  # by unit, then rank
        unit, rows, rank = unit[ranked], rows[ranked], rank[ranked]
        slot = torch.arange(len(unit), device=unit.device) - torch.searchsorted(unit, unit)  # rank order in its unit
        best = slot < self.k_random
        drawn = torch.full((len(units), self.k_random), torch.inf, dtype=rank.dtype, device=rank.device)
        at = torch.zeros(len(units), self.k_random, dtype=torch.int64, device=rank.device)
        drawn[unit[best], slot[best]], at[unit[best], slot[best]] = rank[best], rows[best]
        self.random.offer(drawn, self._offset(at, length, first), at,
                          lambda units, at: self._fetch(flat, length, first, units, at))

    @staticmethod
    def _offset(rows: torch.Tensor, length: int, first: torch.Tensor) -> torch.Tensor:
        """Rows of a batch's [N, U] as offsets in the stream."""
        return first[rows // length] + rows % length

    @staticmethod
    def _peak(flat: torch.Tensor, units: torch.Tensor, spans: torch.Tensor, sign: int) -> torch.Tensor:
        """The row of each unit's maximum of ``sign`` x activation in its span ([E] each): found only for the
        contexts that enter, as the argmax of a span is all a top (or bottom) context needs from the whole-batch
        pass besides its value."""
        rows = spans[:, None] * WINDOW + torch.arange(WINDOW, device=spans.device)  # [E, W]
        peak = (flat.view(-1).take(rows * flat.shape[1] + units[:, None]) * sign).argmax(dim=1)  # [E]
        return spans * WINDOW + peak

    def _fetch(self, flat: torch.Tensor, length: int, first: torch.Tensor, units: torch.Tensor,
               rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The contexts of ``units`` at ``rows`` of ``flat`` [N, U] (sequences of ``length`` tokens from
        ``first``), [E] each: value, position, start, length and window [E, WINDOW]."""
        sequence, offset = rows // length, rows % length
        seq_start = first[sequence]
        position = seq_start + offset
        document = torch.searchsorted(self.documents, position, right=True) - 1
        lo = torch.maximum(seq_start, self.documents[document])
        hi = torch.minimum(seq_start + length, self.documents[document + 1])
        start = torch.maximum(lo, torch.minimum(position - BEFORE, hi - WINDOW))
        window_rows = (rows - offset + start - seq_start)[:, None] + torch.arange(WINDOW, device=rows.device)
        window_rows.clamp_(max=flat.shape[0] - 1)  # [E, W]; rows past the window's length are not used
        width = flat.shape[1]
        window = flat.view(-1).take(window_rows * width + units[:, None])
        return flat.view(-1).take(rows * width + units), position, start, (hi - start).clamp_(max=WINDOW), window

    def result(self) -> LayerContexts:
        """Top contexts with a positive activation, highest first, and bottom ones with a negative activation,
        lowest first; random and band ones that were drawn, in stream order."""
        share = self.band_count.double() / max(self.pool_tokens, 1)
        return LayerContexts(self.tokens, self.histogram.counts.sum(dim=1), self.sum, self.max, self.min,
                             self.histogram.result(), _ranked(self.top), _ranked(self.bottom), _drawn(self.random),
                             tuple(_drawn(band) for band in self.bands), self.band_low, share, self.edge_tokens,
                             self.pool_tokens)


def _ranked(kept: Kept) -> Examples:
    """Extreme contexts by score, highest first (equal ones in stream order); a slot whose score is not above 0 is
    empty."""
    by_position = kept.position.argsort(dim=1, stable=True)
    found = kept.examples(by_position.gather(1, kept.score.gather(1, by_position).argsort(
        dim=1, descending=True, stable=True)))
    return Examples(found.score, found.value, torch.where(found.score > 0, found.position, -1), found.start,
                    found.length, found.window)


def _drawn(kept: Kept) -> Examples:
    """Drawn contexts in stream order; an empty slot (no finite key) is empty."""
    drawn = torch.isfinite(kept.score)
    found = kept.examples(torch.where(drawn, kept.position, torch.iinfo(torch.int64).max).argsort(dim=1))
    return Examples(found.score, found.value, torch.where(torch.isfinite(found.score), found.position, -1),
                    found.start, found.length, found.window)


@torch.no_grad()
def one_pass(model: nn.Module, layers: Mapping[str, nn.Module], tokens: torch.Tensor, context: int, batch: int,
             document_starts: torch.Tensor, offsets: Mapping[str, torch.Tensor], pool_seed: int,
             on_batch: Callable[[int], None] = lambda done: None) -> dict[str, LayerContexts]:
    """Run ``model`` once over ``tokens`` [n] (int64, cut into sequences of ``context``, ``batch`` at a time; a
    remainder shorter than a sequence is left out) and gather every unit's statistics and contexts at each of
    ``layers`` (modules whose output is [B, T, width]). ``offsets`` gives each layer's ``unit_offsets`` (so a unit's
    random draw does not depend on which other layers are measured with it), ``pool_seed`` the tokens' keys;
    ``document_starts`` [D] the stream offsets where documents begin. ``on_batch(tokens_done)`` follows each batch."""
    device = next(model.parameters()).device
    n = len(tokens) - len(tokens) % context
    sequences = tokens[:n].view(-1, context)
    keys = token_keys(n, pool_seed).view(-1, context)
    widths = [len(offsets[name]) for name in layers]
    stats = ContextStats(torch.cat([offsets[name] for name in layers]).to(device), document_starts)
    side_by_side = Scratch()
    for first in range(0, len(sequences), batch):
        ids = sequences[first:first + batch].to(device)
        found = activations(model, layers, ids)
        x = side_by_side.get("acts", (len(ids), context, sum(widths)), found[next(iter(layers))].dtype, device)
        torch.cat([found[name] for name in layers], dim=2, out=x)  # [B, T, U]
        starts = torch.arange(first, first + len(ids), device=device) * context
        stats.update(x.transpose(1, 2), starts, keys[first:first + len(ids)].to(device))
        on_batch((first + len(ids)) * context)
    together = stats.result()
    bounds = torch.tensor([0, *widths]).cumsum(0).tolist()
    return {name: together[lo:hi] for name, lo, hi in zip(layers, bounds, bounds[1:])}
