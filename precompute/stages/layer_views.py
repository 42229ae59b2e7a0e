"""Vision stage ``layer views``: pictures of whole layers (``render.layer_views``), lucid's layer views as Microscope
showed them: each chosen layer's DeepDream, and a caricature of each input image the request names (``--caricature``).

An image is pending while its row is missing, or, for a caricature, while its row was made from a different input of
the same name (all with --force). Each is saved in its own transaction. A few seconds a layer, so it counts nothing
in the run's progress (which counts feature visualisations).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from precompute.registry import LayerSpec
from precompute.stages import Job, Plan
from render.images import to_png
from render.layer_views import View, ViewConfig, caricature, deepdream
from store.keys import LayerImageKind
from store.schema import Layer, LayerImage


@dataclass(frozen=True)
class Input:
    """An image to caricature: its name (the file's stem) and the model's input, [3, size, size] in [0, 1]."""

    name: str
    image: torch.Tensor

    @property
    def sha256(self) -> str:
        return hashlib.sha256(to_png(self.image)).hexdigest()


@dataclass(frozen=True)
class LayerView:
    layer: LayerSpec
    kind: LayerImageKind
    source: Input | None = None  # a caricature's input

    @property
    def name(self) -> str:
        return self.source.name if self.source else ""

    @property
    def label(self) -> str:
        return f"{self.layer.name} {self.kind}{f' of {self.name}' if self.name else ''}"


class LayerViewsStage:
    name = "layer views"

    def __init__(self, job: Job, layers: list[LayerSpec], inputs: tuple[Input, ...], config: ViewConfig):
        self.job, self.layers, self.inputs, self.config = job, layers, inputs, config

    def plan(self, session: Session) -> Plan:
        made = {(layer, kind, name): source for layer, kind, name, source in session.execute(
            select(Layer.name, LayerImage.kind, LayerImage.name, LayerImage.source_sha256).join(Layer)
            .where(Layer.model_id == self.job.model_id))}
        wanted = [LayerView(layer, LayerImageKind.DEEPDREAM) for layer in self.layers]
        wanted += [LayerView(layer, LayerImageKind.CARICATURE, source)
                   for layer in self.layers for source in self.inputs]
        pending = [view for view in wanted if self.job.force or (view.layer.name, view.kind, view.name) not in made
                   or (view.source and made[view.layer.name, view.kind, view.name] != view.source.sha256)]
        return Plan(pending)

    def run(self, items: list[LayerView]) -> Iterator[tuple[LayerView, View]]:
        net = self.job.net
        for item in items:
            layer = net.get_submodule(item.layer.module)
            yield item, (caricature(net, layer, item.source.image, self.config, self.job.device) if item.source
                         else deepdream(net, layer, self.config, self.job.device))

    def save(self, session: Session, item: LayerView, view: View) -> int:
        layer_id = session.scalar(select(Layer.id).where(Layer.model_id == self.job.model_id,
                                                         Layer.name == item.layer.name))
        session.execute(delete(LayerImage).where(LayerImage.layer_id == layer_id, LayerImage.kind == item.kind,
                                                 LayerImage.name == item.name))
        session.add(LayerImage(layer_id=layer_id, kind=item.kind, name=item.name,
                               asset_sha256=self.job.image_asset(session, view.image),
                               source_sha256=self.job.image_asset(session, item.source.image) if item.source else None,
                               params=view.params, activation=view.objective))
        return 0
