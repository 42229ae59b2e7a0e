"""Vision stage ``weights``: how each chosen layer's units read the layer before it and are read by the layer after
it (``render.vision_weights``), so its units' pages list both directions even where the other layer was not chosen.

For every pair of a unit and a previous-layer unit there is a [h, w] kernel: the conv kernel with batchnorm folded
where the layers are directly connected, the expanded weights (nonlinearities replaced by identity, max pooling by
average pooling) where pooling, branches or residuals sit between. Each unit keeps its strongest inputs and each
previous-layer unit its strongest outputs (``EdgeKind`` says what an edge's weight is); each kept kernel is drawn as a
small picture on one colour scale per pair of layers, so kernels of one layer compare by eye.

A pair of layers is pending while its reader has no weight edges (all chosen layers' pairs with --force); a pair that
two chosen layers share is done once. Quick next to feature visualisation, so it counts nothing in the run's progress.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from precompute.registry import LayerSpec
from precompute.stages import Job, Plan
from render.vision_weights import expanded_weights, kernel_image, strongest
from store.keys import EdgeKind
from store.schema import Edge, Layer, Unit

STRONGEST = 16  # inputs kept per unit, and outputs per previous-layer unit
SCALE_QUANTILE = 0.99  # of the kept kernels' |values|: full colour, so one outlier does not wash out the rest


@dataclass(frozen=True)
class LayerPair:
    source: LayerSpec  # the layer read
    reader: LayerSpec

    @property
    def label(self) -> str:
        return f"weights {self.source.name} → {self.reader.name}"

    @property
    def kind(self) -> EdgeKind:
        return EdgeKind.WEIGHT if self.reader.direct else EdgeKind.EXPANDED


@dataclass(frozen=True)
class Found:
    pairs: torch.Tensor  # [E, 2] (reader unit, source unit)
    weights: torch.Tensor  # [E] kernel norm signed by the kernel's sum
    images: list[torch.Tensor]  # E kernel pictures [3, h, w]


class KernelsStage:
    name = "weights"

    def __init__(self, job: Job, layers: list[LayerSpec]):
        self.job, self.layers = job, layers

    def plan(self, session: Session) -> Plan:
        every = self.job.spec.layers
        order = [layer.name for layer in every]
        pairs: list[LayerPair] = []
        for layer in self.layers:
            at = order.index(layer.name)
            for source, reader in ((at - 1, at), (at, at + 1)):
                pair = LayerPair(every[source], every[reader]) if source >= 0 and reader < len(every) else None
                if pair is not None and pair not in pairs:
                    pairs.append(pair)
        return Plan([pair for pair in pairs if self.job.force or not self._has_edges(session, pair)])

    def _has_edges(self, session: Session, pair: LayerPair) -> bool:
        readers = select(Unit.id).join(Layer).where(Layer.model_id == self.job.model_id, Layer.name == pair.reader.name)
        return session.scalar(select(Edge.id).where(Edge.kind == pair.kind, Edge.circuit_id.is_(None),
                                                    Edge.dst_unit_id.in_(readers)).limit(1)) is not None

    def run(self, items: list[LayerPair]) -> Iterator[tuple[LayerPair, Found]]:
        net, spec = self.job.net, self.job.spec
        shape = (3, spec.preprocess.size, spec.preprocess.size)
        for item in items:
            source, reader = net.get_submodule(item.source.module), net.get_submodule(item.reader.module)
            kernels = expanded_weights(net, source, reader, shape, self.job.device).weights.cpu()  # [dst, src, h, w]
            pairs, weights = strongest(kernels, STRONGEST)
            kept = kernels[pairs[:, 0], pairs[:, 1]]  # [E, h, w]
            scale = kept.abs().flatten().quantile(SCALE_QUANTILE).item() or 1.0
            yield item, Found(pairs, weights, [kernel_image(kernel, scale) for kernel in kept])

    def save(self, session: Session, item: LayerPair, found: Found) -> int:
        readers, sources = self.job.unit_ids(session, item.reader.name), self.job.unit_ids(session, item.source.name)
        session.execute(delete(Edge).where(Edge.kind.in_([EdgeKind.WEIGHT, EdgeKind.EXPANDED]),
                                           Edge.circuit_id.is_(None), Edge.dst_unit_id.in_(readers.values()),
                                           Edge.src_unit_id.in_(sources.values())))
        pictures = self.job.image_assets(session, found.images)
        session.execute(insert(Edge), [
            {"src_unit_id": sources[source], "dst_unit_id": readers[reader], "kind": item.kind, "weight": weight,
             "asset_sha256": sha}
            for (reader, source), weight, sha in zip(found.pairs.tolist(), found.weights.tolist(), pictures)])
        return 0
