"""What a registry entry is: a model's layers, its input preprocessing, where its weights come from, and how to
load it, described without importing torch (``precompute.registry`` holds the entries, ``precompute.zoo`` the
Microscope organisms)."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class WeightsError(Exception):
    """A model's weights are missing, altered or do not fit it (the message says how to fix it)."""


@dataclass(frozen=True)
class LayerSpec:
    name: str  # URL-safe name shown in the atlas
    module: str  # dotted attribute path of the module whose output is the layer
    kind: str
    units: int
    shape: tuple[int, ...]  # activation shape for one input, [channels, h, w]
    # vision: the layer's conv reads the previous layer's output as it is (no pooling, branch or residual between),
    # so its weights from that layer are direct (``EdgeKind.WEIGHT``) rather than expanded
    direct: bool = False


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a vision model's input. ``precompute.datasets.images.prepare`` resizes the shorter side
    to ``resize`` and cuts out the centre ``size`` x ``size``; every stage then works on RGB values in [0, 1], which
    ``precompute.adapters.taking_unit_images`` maps to the model's input in front of its first layer: channels
    reversed when ``bgr`` (Caffe), [0, 1] mapped linearly to ``value_range``, then minus ``mean`` and divided by
    ``std`` per channel (in the model's channel order)."""

    size: int
    resize: int
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bgr: bool = False

    @property
    def is_identity(self) -> bool:
        return (self.value_range, self.mean, self.std, self.bgr) == ((0.0, 1.0), (0.0,) * 3, (1.0,) * 3, False)

    def affine(self) -> tuple[list[float], list[float]]:
        """(shift, scale) per channel with model input = x * scale + shift for x in [0, 1] (after any BGR flip)."""
        low, high = self.value_range
        return ([(low - m) / s for m, s in zip(self.mean, self.std)],
                [(high - low) / s for s in self.std])

    def describe(self) -> dict[str, Any]:
        return {"size": self.size, "resize": self.resize, "value_range": list(self.value_range),
                "mean": list(self.mean), "std": list(self.std), "channels": "BGR" if self.bgr else "RGB"}


@dataclass(frozen=True)
class WeightSource:
    """Where a registered model's published weights come from (``precompute.weights`` finds, checks and, when the
    network allows, downloads them)."""

    file: str  # the file name looked for (in --weights DIR, $ATLASCOPE_WEIGHTS_DIR, torch's hub cache)
    url: str  # where its publisher serves it
    format: str  # "state_dict" (torch.save), "safetensors", "caffemodel"
    # the publisher's sha256, whole or its first hex digits (torch hub's file names carry 8 of them); None when the
    # publisher gives none, and then the sha256 of the file read is recorded on the model page instead
    sha256: str | None = None
    hf_repo: str | None = None  # a Hugging Face repository holding ``file`` (timm's weights), for its cache
    note: str = ""  # how these weights relate to the ones Microscope rendered


@dataclass(frozen=True)
class ModelSpec:
    slug: str
    title: str
    kind: str  # "vision" | "language"
    description: str
    source: str  # where the weights come from
    layers: tuple[LayerSpec, ...]
    loader: str  # "module:function" returning the nn.Module in eval mode, on the CPU
    # "module:function" returning a sample of inputs for activation statistics; None: a vision model's statistics
    # come from the dataset its examples are ranked on
    dataset: str | None = None
    # language: "module:function" returning the ``tokenizers.Tokenizer`` the model reads text with (its tasks are
    # encoded, and its tokens shown, with it); given ``weights`` when the model has them, as its tokenizer lives there
    tokenizer: str | None = None
    card_file: Path | None = None
    weights: Path | None = None  # a user's weights file or directory (``--weights``), for loaders that take one
    preprocess: Preprocess | None = None  # vision: how dataset images become inputs
    # vision: "module:function" returning the ``precompute.datasets.images.ImageDataset`` units are ranked on when no
    # --dataset is given
    examples: str | None = None
    weights_source: WeightSource | None = None  # published weights to look for (registered organisms)
    random_weights: bool = False  # seeded random weights, asked for with --random-weights: labelled untrained
    seed: int = 0  # seeds random weights
    card_data: dict[str, Any] | None = None  # added to the card: the weights read, a user model's definition
    microscope: str | None = None  # the model's slug on OpenAI Microscope, when it was one of its organisms

    def layer(self, name: str) -> LayerSpec:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"model {self.slug!r} has no layer {name!r}; layers: {', '.join(l.name for l in self.layers)}")

    def card(self) -> dict[str, Any]:
        card = json.loads(self.card_file.read_text()) if self.card_file else {}
        return {**card, **(self.card_data or {})}

    def load(self):
        """The model in eval mode on the CPU, taking RGB images in [0, 1] if it is a vision model (its
        ``preprocess`` applied in front of it); the loader gets this spec (for ``weights`` and the card)."""
        net = _resolve(self.loader)(self)
        if self.preprocess is None:
            return net
        from precompute.adapters import taking_unit_images

        return taking_unit_images(net, self.preprocess)

    def dataset_sample(self):
        """The sample of inputs (None when the model has none of its own); one for a user's weights gets this spec,
        as its tokenizer lives with the weights."""
        if self.dataset is None:
            return None
        return _resolve(self.dataset)(*([self] if self.weights else []))

    def load_tokenizer(self):
        """The language model's tokenizer (``tokenizer``); the loader may raise its own error for missing files."""
        if self.tokenizer is None:
            raise ValueError(f"{self.slug} reads no text: it has no tokenizer")
        return _resolve(self.tokenizer)(*([self.weights] if self.weights else []))

    def default_examples(self):
        """The built-in dataset the model's units are ranked on without --dataset."""
        return _resolve(self.examples)()

    def summary(self) -> dict[str, Any]:
        published = self.weights_source
        return {"slug": self.slug, "title": self.title, "kind": self.kind, "source": self.source,
                "microscope": self.microscope,
                "weights": {"file": published.file, "url": published.url, "sha256": published.sha256,
                            "format": published.format} if published else None,
                "input": self.preprocess.describe() if self.preprocess else None,
                "units": sum(l.units for l in self.layers),
                "layers": [{"name": l.name, "kind": l.kind, "units": l.units, "shape": list(l.shape)}
                           for l in self.layers]}


def _resolve(target: str):
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)
