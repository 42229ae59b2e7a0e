"""Read activations at named modules; the forward pass stops once every requested module has fired.

Hooks live for exactly one forward pass, so nothing outlives a render (unlike lucent's render_vis).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn


class _StopForward(Exception):
    """Raised from the last hook to skip the layers after the deepest one we need."""


def stream(model: nn.Module, layers: Mapping[str, nn.Module], x: torch.Tensor,
           on_output: Callable[[str, torch.Tensor], None]) -> None:
    """Run ``model(x)`` up to the deepest of ``layers``, handing each layer's output to ``on_output(name, output)``
    inside its hook, while it is fresh in cache and before a later in-place op (a ResNet's ``ReLU(inplace=True)``
    after a hooked batchnorm) can change it. Nothing keeps the outputs alive: a pass reducing them on the fly holds
    one layer's activations at a time, not all of them."""
    fired: set[str] = set()

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            on_output(name, output)
            fired.add(name)
            if len(fired) == len(layers):
                raise _StopForward

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in layers.items()]
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = set(layers) - fired
    if missing:
        raise RuntimeError(f"layers never ran in the forward pass: {sorted(missing)}")


def activations(model: nn.Module, layers: Mapping[str, nn.Module], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` up to the deepest of ``layers``; return each layer's output by name."""
    captured: dict[str, torch.Tensor] = {}
    stream(model, layers, x, captured.__setitem__)
    return captured
