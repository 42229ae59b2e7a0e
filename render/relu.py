"""Redirected ReLU gradients, so optimisation can start from a unit that is switched off.

A ReLU passes no gradient through negative inputs. If a unit's pre-activation starts negative everywhere the
objective looks (the centre position of a neuron objective, say), plain gradient ascent never moves. Lucid's remedy,
reimplemented here: for a batch element that receives no ordinary ReLU gradient at all, let the gradient through
wherever it would raise the input. The forward values are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class _RedirectedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        ordinary = torch.ops.aten.threshold_backward(grad, x, 0)  # grad where x > 0, else 0: the plain ReLU's
        starved = ~ordinary.flatten(1).any(dim=1)  # [batch]: nothing got through the ordinary ReLU
        if not starved.any():  # the usual case once an image is under way: only then is this as cheap as a ReLU
            return ordinary
        # Descent moves x along -grad: where x < 0 and grad > 0 it would push x further down, so block that.
        redirected = grad.masked_fill((x < 0) & (grad > 0), 0)
        return torch.where(starved.view(-1, *[1] * (x.dim() - 1)), redirected, ordinary)


def _redirected_forward(x: torch.Tensor) -> torch.Tensor:
    return _RedirectedReLU.apply(x)


@contextmanager
def redirected_relus(model: nn.Module) -> Iterator[None]:
    """Within the block, every ``nn.ReLU`` of ``model`` back-propagates redirected gradients (and runs out of place).

    The module's ``forward`` is replaced on the instance, not wrapped by a hook, so the ReLU is computed once."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        for relu in relus:
            relu.forward = _redirected_forward
        yield
    finally:
        for relu in relus:
            relu.__dict__.pop("forward", None)
