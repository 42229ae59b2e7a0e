"""Language stage ``weights``: what the weights say about each unit of the chosen layers (``render.lm_weights``): the
logit effects of residual channels and MLP neurons (``Stat.LOGIT_EFFECTS``), and the edges by which the layer's units
read others (``EdgeKind.WEIGHT``, src = the unit read, dst = the reader). A layer's outgoing edges are saved with the
layer that reads them. Quick, so it counts nothing in the run's progress.

A layer is pending while a unit of it that should have logit effects lacks them, or while it has a source layer and
no weight edges from it (all chosen layers with --force).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from precompute.registry import LayerSpec
from precompute.stages import Job, Plan
from precompute.stages.tokens import vocabulary
from render.lm_weights import edges, incoming, logit_effects, source, writes_residual
from store.keys import EdgeKind, Stat
from store.schema import Edge, Layer, Unit


@dataclass(frozen=True)
class LayerWork:
    layer: LayerSpec
    source: str | None  # the layer it reads by weights

    @property
    def label(self) -> str:
        return self.layer.name


@dataclass(frozen=True)
class Found:
    effects: tuple[torch.Tensor, ...] | None  # render.lm_weights.logit_effects, or None where there are none
    pairs: torch.Tensor | None  # [E, 2] (dst, src) unit indices
    weights: torch.Tensor | None  # [E]


class WeightsStage:
    name = "weights"

    def __init__(self, job: Job, layers: list[LayerSpec], n_layer: int):
        self.job, self.layers, self.n_layer = job, layers, n_layer
        self._vocabulary: list[str] | None = None

    def plan(self, session: Session) -> Plan:
        return Plan([LayerWork(layer, src) for layer in self.layers
                     if self._pending(session, layer, src := source(layer.name, self.n_layer))])

    def _pending(self, session: Session, layer: LayerSpec, src: str | None) -> bool:
        if self.job.force:
            return True
        in_layer = select(Unit.id).join(Layer).where(Layer.model_id == self.job.model_id, Layer.name == layer.name)
        if writes_residual(layer.name) and session.scalar(select(func.count()).select_from(Unit).where(
                Unit.id.in_(in_layer), func.json_extract(Unit.stats, f"$.{Stat.LOGIT_EFFECTS}").is_(None))):
            return True
        return src is not None and not session.scalar(select(Edge.id).where(
            Edge.kind == EdgeKind.WEIGHT, Edge.dst_unit_id.in_(in_layer)).limit(1))

    def run(self, items: list[LayerWork]) -> Iterator[tuple[LayerWork, Found]]:
        net = self.job.net
        for item in items:
            effects = logit_effects(net, item.layer.name) if writes_residual(item.layer.name) else None
            weights = incoming(net, item.layer.name)
            pairs, values = edges(weights) if weights is not None else (None, None)
            yield item, Found(effects, pairs, values)

    def save(self, session: Session, item: LayerWork, found: Found) -> int:
        unit_ids = self.job.unit_ids(session, item.layer.name)
        if found.effects is not None:
            stats = dict(session.execute(select(Unit.id, Unit.stats).where(Unit.id.in_(unit_ids.values()))).all())
            up_ids, up_values, down_ids, down_values = (t.tolist() for t in found.effects)
            vocabulary = self._texts()
            session.execute(update(Unit), [{"id": unit_id, "stats": {**stats[unit_id], Stat.LOGIT_EFFECTS: {
                "promoted": [{"token": vocabulary[t], "id": t, "value": v}
                             for t, v in zip(up_ids[index], up_values[index])],
                "suppressed": [{"token": vocabulary[t], "id": t, "value": v}
                               for t, v in zip(down_ids[index], down_values[index])]}}}
                for index, unit_id in unit_ids.items()])
        if found.pairs is not None:
            source_ids = self.job.unit_ids(session, item.source)
            session.execute(delete(Edge).where(Edge.kind == EdgeKind.WEIGHT, Edge.dst_unit_id.in_(unit_ids.values()),
                                               Edge.src_unit_id.in_(source_ids.values())))
            rows = [{"src_unit_id": source_ids[src], "dst_unit_id": unit_ids[dst], "kind": EdgeKind.WEIGHT,
                     "weight": w} for (dst, src), w in zip(found.pairs.tolist(), found.weights.tolist())]
            if rows:  # a matrix of zeros has none (an insert of no rows would be one row of nothing)
                session.execute(insert(Edge), rows)
        return 0

    def _texts(self) -> list[str]:
        """Every token's text on its own, for the token lists of logit effects."""
        if self._vocabulary is None:
            self._vocabulary = vocabulary(self.job.spec, self.job.net.lm_head.weight.shape[0])
        return self._vocabulary
