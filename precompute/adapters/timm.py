"""timm's architectures: the TF-slim Inceptions (timm's ``tf_in1k`` weights are ported from slim's checkpoints,
with slim's module names), a pre-activation ResNet-50 v2, and any ``timm:NAME`` a user brings."""

from __future__ import annotations

from torch import nn

from precompute.adapters import built
from precompute.registry import ModelSpec


def _create(name: str) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False)


def inceptionv3_slim(spec: ModelSpec) -> nn.Module:
    return built(spec, lambda: _create("inception_v3.tf_in1k"))


def inceptionv4_slim(spec: ModelSpec) -> nn.Module:
    return built(spec, lambda: _create("inception_v4.tf_in1k"))


def resnetv2_50_slim(spec: ModelSpec) -> nn.Module:
    return built(spec, lambda: _create("resnetv2_50.a1h_in1k"))


def architecture(name: str) -> nn.Module:
    """``timm:NAME``: the architecture, untrained (weights come from the user's --weights)."""
    import timm

    if not timm.is_model(name):
        raise ValueError(f"timm has no model {name!r} (timm.list_models('*{name.split('.')[0][:6]}*') lists "
                         f"similar names)")
    return _create(name)
