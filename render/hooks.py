"""Read activations at named modules; the forward pass stops once every requested module has fired.

Hooks live for exactly one forward pass, so nothing outlives a render (unlike lucent's render_vis).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


class _StopForward(Exception):
    """Raised from the last hook to skip the layers after the deepest one we need."""


def activations(model: nn.Module, layers: Mapping[str, nn.Module], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` up to the deepest of ``layers``; return each layer's output by name."""
    captured: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(_module, _inputs, output):
            captured[name] = output
            if len(captured) == len(layers):
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
    missing = set(layers) - set(captured)
    if missing:
        raise RuntimeError(f"layers never ran in the forward pass: {sorted(missing)}")
    return captured
