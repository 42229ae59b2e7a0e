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
        ordinary = grad * (x > 0)
        # Descent moves x along -grad: where x < 0 and grad > 0 it would push x further down, so block that.
        redirected = grad.masked_fill((x < 0) & (grad > 0), 0)
        starved = ordinary.flatten(1).abs().amax(dim=1) == 0  # [batch]: nothing got through the ordinary ReLU
        return torch.where(starved.view(-1, *[1] * (x.dim() - 1)), redirected, ordinary)


@contextmanager
def redirected_relus(model: nn.Module) -> Iterator[None]:
    """Within the block, every ``nn.ReLU`` of ``model`` back-propagates redirected gradients (and runs out of place)."""
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    inplace = [m.inplace for m in relus]
    handles = []
    try:
        for relu in relus:
            relu.inplace = False  # the hook needs the untouched input
            handles.append(relu.register_forward_hook(lambda _m, inputs, _out: _RedirectedReLU.apply(inputs[0])))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for relu, flag in zip(relus, inplace):
            relu.inplace = flag
