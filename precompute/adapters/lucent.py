"""torch-lucent's model zoo: lucid's InceptionV1, the network Microscope's ``inceptionv1`` pages show, with lucid's
layer names (conv2d0 ... mixed5b). Lucent itself is imported only by ``render.lucent_compat``."""

from __future__ import annotations

from torch import nn

from precompute.adapters import built
from precompute.registry import ModelSpec
from render.lucent_compat import inceptionv1 as lucent_inceptionv1


def inceptionv1(spec: ModelSpec) -> nn.Module:
    """Inputs in (-117, 138) as lucid's graph expects; weights: lucent's state dict (inception5h.pth)."""
    return built(spec, lucent_inceptionv1)
