"""Histograms of many units' values in one pass over a stream, without knowing their range in advance.

Each unit has ``BINS`` equal bins from ``lo`` to ``lo + BINS * width``. The first batch a unit sees sets a range that
just holds it, with a power-of-two width and edges on whole multiples of it; when a later batch falls outside the
range, the width grows by the smallest power of two that holds both, and the counts regroup onto the coarser grid
(an old bin never straddles a new edge). So no value is ever clipped, the counts are exact, and the data fills at
least about half of the range;
``Histograms.unit`` then drops the empty bins at both ends. A range fixed from the first batch (the other one-pass
scheme) would clip every later value beyond it, and would have nothing to go on for a unit silent in the first batch.

Counting is vectorised over units: a value's bin is the floor of value / width (a power of two, so exact, and the
edges are where the floor changes), its slot adds the unit's offset, and one ``index_add_`` counts every slot of a
batch. Each value counts with a weight (1 for the nonzero ones, for the atlas).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

BINS = 64
FIRST_WIDTH = 2.0 ** -24  # the narrowest bins, for a unit whose values so far are all 0
FINEST = 2.0 ** -20  # and relative to the values' size, so value / width stays well inside int32


@dataclass(frozen=True)
class Histograms:
    """Finished histograms: unit u has BINS bins of ``width[u]`` from ``lo[u]``."""

    lo: torch.Tensor  # [U] float64
    width: torch.Tensor  # [U] float64
    counts: torch.Tensor  # [U, BINS] int64

    def __getitem__(self, units: slice) -> Histograms:
        return Histograms(self.lo[units], self.width[units], self.counts[units])

    def unit(self, index: int) -> tuple[list[float], list[int]]:
        """One unit's edges (bins + 1) and counts, without the empty bins at either end; ([], []) if it counted
        nothing."""
        counts = self.counts[index]
        filled = torch.nonzero(counts).flatten()
        if not len(filled):
            return [], []
        first, last = int(filled[0]), int(filled[-1])
        lo, width = float(self.lo[index]), float(self.width[index])
        return [lo + width * i for i in range(first, last + 2)], counts[first:last + 1].tolist()


class StreamingHistogram:
    """Exact histograms of ``units`` streams of values, with ranges that grow as needed."""

    def __init__(self, units: int, device: torch.device | str = "cpu"):
        self.units = units
        # float64: after many doublings lo is a multiple of the first width too long for float32's mantissa
        self.lo = torch.zeros(units, dtype=torch.float64, device=device)  # [U]
        self.width = torch.full((units,), FIRST_WIDTH, dtype=torch.float64, device=device)  # [U]
        self.counts = torch.zeros(units, BINS, dtype=torch.int64, device=device)  # [U, BINS]
        self._slots = torch.arange(units, dtype=torch.int32, device=device) * BINS  # [U] each unit's first slot

    def cover(self, low: torch.Tensor, high: torch.Tensor) -> None:
        """Widen each unit's range, where needed, to hold its old range and [low, high] ([U] each), high strictly
        below the top edge: the narrowest power-of-two multiple of the old width that does (any power of two for a
        unit that has counted nothing yet), on the grid of that width, the counts regrouped onto it."""
        low, high = low.double(), high.double()
        top = self.lo + BINS * self.width
        fresh = self.counts.sum(dim=1) == 0  # [U]
        need = fresh | (low < self.lo) | (high >= top)
        if not bool(need.any()):
            return
        a = torch.where(fresh, low, torch.minimum(self.lo, low))  # what the new range must hold: [a, z]
        z = torch.where(fresh, high, torch.maximum(top, high))
        narrowest = torch.exp2(torch.floor(torch.log2(torch.maximum(low.abs(), high.abs()).clamp(min=FIRST_WIDTH)
                                                      * FINEST)))  # keeps value / width well inside int32
        width = torch.maximum(torch.where(fresh, narrowest, self.width),
                              torch.exp2(torch.ceil(torch.log2((z - a) / (BINS - 1)))))
        while True:  # 63 widths from a whole multiple at or below a reach past z; rounding may want one doubling more
            lo = torch.floor(a / width) * width
            short = need & (lo + BINS * width <= z)
            if not bool(short.any()):
                break
            width = torch.where(short, 2 * width, width)
        old = self.lo[:, None] + self.width[:, None] * torch.arange(BINS, device=lo.device)  # [U, BINS] old edges
        regroup = need & ~fresh
        target = torch.where(regroup[:, None], torch.floor((old - lo[:, None]) / width[:, None]).long(),
                             torch.arange(BINS, device=lo.device))
        self.counts = torch.zeros_like(self.counts).scatter_add_(1, target, self.counts)
        self.lo, self.width = torch.where(need, lo, self.lo), torch.where(need, width, self.width)

    def add(self, values: torch.Tensor, weights: torch.Tensor, slots: torch.Tensor, bins: torch.Tensor) -> None:
        """Count ``values`` [..., U] (the unit on the last axis), each with its weight (0 or 1) from ``weights``,
        same shape. ``slots`` (float32) and ``bins`` (int32), same shape, are scratch space the caller may reuse.
        Call ``cover`` first with the values' extremes."""
        scale = (1.0 / self.width).to(values.dtype)  # [U] powers of two: values * scale is exact
        torch.mul(values, scale, out=slots).floor_()  # the value's bin on the unit's grid, exactly
        bins.copy_(slots)
        bins.add_(self._slots - (self.lo / self.width).to(torch.int32))  # counted from lo, in the unit's slots
        self.counts += _count(bins.view(-1), weights.reshape(-1), self.units * BINS).view(self.units, BINS)

    def result(self) -> Histograms:
        return Histograms(self.lo, self.width, self.counts)


def _count(slots: torch.Tensor, weights: torch.Tensor, size: int) -> torch.Tensor:
    """The sum of ``weights`` [n] falling into each of ``size`` slots by ``slots`` [n] (int32): [size] int64.
    ``index_add_`` runs on one thread, and this scatter was the largest single cost of the contexts pass, so on the
    CPU the values are split into as many parts as torch has threads and counted at once (torch releases the GIL)."""
    parts = torch.get_num_threads() if slots.device.type == "cpu" else 1

    def count(part: int) -> torch.Tensor:
        lo, hi = part * len(slots) // parts, (part + 1) * len(slots) // parts
        counted = torch.zeros(size, dtype=weights.dtype, device=weights.device)
        return counted.index_add_(0, slots[lo:hi], weights[lo:hi])

    with ThreadPoolExecutor(parts) as pool:
        counted = sum(pool.map(count, range(parts)))
    return counted.round().to(torch.int64)  # whole numbers: float32 is exact below 2**24 a batch
