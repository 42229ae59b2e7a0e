"""Every model atlascope knows how to precompute, described without importing torch (so `atlascope models` and the
server-only install can list them). Loaders are named as ``module:function`` and imported only when used.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ORGANISMS = Path(__file__).parent / "organisms"


@dataclass(frozen=True)
class LayerSpec:
    name: str  # URL-safe name shown in the atlas
    module: str  # dotted attribute path of the module whose output is the layer
    kind: str
    units: int
    shape: tuple[int, ...]  # activation shape for one input, [channels, h, w]


@dataclass(frozen=True)
class ModelSpec:
    slug: str
    title: str
    kind: str  # "vision" | "language"
    description: str
    source: str  # where the weights come from
    layers: tuple[LayerSpec, ...]
    loader: str  # "module:function" returning the nn.Module in eval mode, on the CPU
    dataset: str  # "module:function" returning a sample of inputs for activation statistics
    card_file: Path | None = None

    def layer(self, name: str) -> LayerSpec:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"model {self.slug!r} has no layer {name!r}; layers: {', '.join(l.name for l in self.layers)}")

    def card(self) -> dict[str, Any]:
        return json.loads(self.card_file.read_text()) if self.card_file else {}

    def load(self):
        return _resolve(self.loader)()

    def dataset_sample(self):
        return _resolve(self.dataset)()

    def summary(self) -> dict[str, Any]:
        return {"slug": self.slug, "title": self.title, "kind": self.kind, "source": self.source,
                "units": sum(l.units for l in self.layers),
                "layers": [{"name": l.name, "kind": l.kind, "units": l.units, "shape": list(l.shape)}
                           for l in self.layers]}


def _resolve(target: str):
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


TINYVISION = ModelSpec(
    slug="tinyvision",
    title="TinyVision (embedded organism)",
    kind="vision",
    description="A four-block CNN trained by atlascope on 64x64 images that exist offline: eight procedural pattern "
                "classes (oriented gratings, checkerboards, dots, rings, colour blobs) and crops of nine photographs "
                "shipped inside scikit-image. Small enough to render end to end on a laptop CPU.",
    source="embedded: precompute/organisms/tinyvision.pt, made by `python -m precompute.organisms.train_tinyvision`",
    layers=(
        LayerSpec("conv1", "conv1", "conv", 32, (32, 64, 64)),
        LayerSpec("conv2", "conv2", "conv", 64, (64, 32, 32)),
        LayerSpec("conv3", "conv3", "conv", 96, (96, 16, 16)),
        LayerSpec("conv4", "conv4", "conv", 128, (128, 8, 8)),
    ),
    loader="precompute.loaders:load_tinyvision",
    dataset="precompute.loaders:tinyvision_sample",
    card_file=ORGANISMS / "tinyvision.json",
)

REGISTRY: dict[str, ModelSpec] = {spec.slug: spec for spec in (TINYVISION,)}
DEFAULT_MODEL = TINYVISION.slug


def get_model(slug: str) -> ModelSpec:
    try:
        return REGISTRY[slug]
    except KeyError:
        raise KeyError(f"unknown model {slug!r}; registered: {', '.join(REGISTRY)}") from None
