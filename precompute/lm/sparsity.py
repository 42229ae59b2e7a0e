"""Weight sparsity as the paper trains it: after every optimizer step, keep only the largest weights of each matrix.

The kept fraction starts dense and falls linearly to the target over an early window of training (by default from 1%
to 50% of the steps), so the model first finds useful directions and then concentrates them in few weights. Every row
(an output neuron, or a token's embedding) keeps at least a few weights, so no unit is cut off entirely.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MIN_PER_ROW = 4  # weights every neuron keeps, however sparse the matrix


def kept_fraction(step: int, steps: int, target: float, start: float = 0.01, end: float = 0.5) -> float:
    """The fraction of each matrix's weights kept after ``step`` of ``steps``: 1 until ``start`` of training, then
    linear down to ``target`` at ``end`` and after."""
    begin, finish = start * steps, end * steps
    if step <= begin:
        return 1.0
    if step >= finish:
        return target
    return 1.0 + (target - 1.0) * (step - begin) / (finish - begin)


def lr_scale(fraction: float, target: float) -> float:
    """Learning rate multiplier while weights are denser than the target: sqrt(target / fraction), 1 at the target."""
    return math.sqrt(target / fraction)


@torch.no_grad()
def keep_largest_(matrix: torch.Tensor, fraction: float, min_per_row: int = MIN_PER_ROW) -> None:
    """Keep ``fraction`` of the entries, zero the rest: first the ``min_per_row`` largest of each row, then the
    largest of the others up to the budget, so no matrix holds more than its fraction (unless the per-row minimum
    alone is more)."""
    if fraction >= 1.0:
        return
    magnitude = matrix.abs()  # [rows, cols]
    keep = torch.zeros_like(matrix, dtype=torch.bool)
    keep.scatter_(1, torch.topk(magnitude, min(min_per_row, matrix.shape[1]), dim=1, sorted=False).indices, True)
    remaining = max(1, int(fraction * matrix.numel())) - int(keep.sum())
    if remaining > 0:
        others = magnitude.masked_fill(keep, -1.0).flatten()
        keep.view(-1)[torch.topk(others, remaining, sorted=False).indices] = True
    matrix.mul_(keep)


def sparsify_(matrices: dict[str, nn.Parameter], fraction: float) -> None:
    for matrix in matrices.values():
        keep_largest_(matrix.data, fraction)


def rescale_gradients_(parameters: list[nn.Parameter]) -> float:
    """Divide every gradient by the root mean square over all of them (so the update's scale is set by the learning
    rate alone); returns the RMS it had."""
    grads = [p.grad for p in parameters if p.grad is not None]
    count = sum(g.numel() for g in grads)
    rms = math.sqrt(sum(float(g.pow(2).sum()) for g in grads) / count)
    if rms > 0:
        for grad in grads:
            grad.div_(rms)
    return rms


def nonzero_report(matrices: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Per matrix: its shape, nonzero count and nonzero fraction, as model cards show them."""
    return {name: {"shape": list(m.shape), "nonzero": int(m.count_nonzero()),
                   "fraction": float(m.count_nonzero()) / m.numel()} for name, m in matrices.items()}
