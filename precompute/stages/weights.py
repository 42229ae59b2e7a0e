"""Language stage ``weights``: what the weights say about each unit of the chosen layers (``render.lm_weights``): the
logit effects of residual channels and MLP neurons (``Stat.LOGIT_EFFECTS``), and the edges by which the layer's units
read others and are read by others (``EdgeKind.WEIGHT``, src = the unit read, dst = the reader). A chosen layer saves
both directions, so its units' pages list every connection even where the layer at the other end was not chosen
(each connection between two layers is saved once, with the first chosen layer it touches). Quick, so it counts
nothing in the run's progress.

A layer is pending while a unit of it that should have logit effects lacks them, or while one of its connections has
no weight edges (all chosen layers with --force).
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
    connections: tuple[tuple[str, str], ...]  # (source, reader) layers whose weights it saves: it reads or is read

    @property
    def label(self) -> str:
        return self.layer.name


@dataclass(frozen=True)
class Connection:
    source: str  # the layer read
    reader: str
    pairs: torch.Tensor  # [E, 2] (reader, source) unit indices
    weights: torch.Tensor  # [E]


@dataclass(frozen=True)
class Found:
    effects: tuple[torch.Tensor, ...] | None  # render.lm_weights.logit_effects, or None where there are none
    connections: list[Connection]


class WeightsStage:
    name = "weights"

    def __init__(self, job: Job, layers: list[LayerSpec], n_layer: int):
        self.job, self.layers, self.n_layer = job, layers, n_layer
        self._vocabulary: list[str] | None = None

    def plan(self, session: Session) -> Plan:
        claimed: set[tuple[str, str]] = set()
        items = []
        for layer in self.layers:
            connections = tuple(pair for pair in self._connections(layer.name) if pair not in claimed)
            claimed.update(connections)
            if self._pending(session, layer, connections):
                items.append(LayerWork(layer, connections))
        return Plan(items)

    def _connections(self, layer: str) -> list[tuple[str, str]]:
        """(source, reader) of every weight connection at ``layer``: the one it reads by, then those reading it."""
        src = source(layer, self.n_layer)
        readers = [other.name for other in self.job.spec.layers if source(other.name, self.n_layer) == layer]
        return ([(src, layer)] if src is not None else []) + [(layer, reader) for reader in readers]

    def _in_layer(self, name: str):
        return select(Unit.id).join(Layer).where(Layer.model_id == self.job.model_id, Layer.name == name)

    def _pending(self, session: Session, layer: LayerSpec, connections: tuple[tuple[str, str], ...]) -> bool:
        if self.job.force:
            return True
        if writes_residual(layer.name) and session.scalar(select(func.count()).select_from(Unit).where(
                Unit.id.in_(self._in_layer(layer.name)),
                func.json_extract(Unit.stats, f"$.{Stat.LOGIT_EFFECTS}").is_(None))):
            return True
        return any(session.scalar(select(Edge.id).where(
            Edge.kind == EdgeKind.WEIGHT, Edge.circuit_id.is_(None), Edge.dst_unit_id.in_(self._in_layer(reader)),
            Edge.src_unit_id.in_(self._in_layer(src))).limit(1)) is None for src, reader in connections)

    def run(self, items: list[LayerWork]) -> Iterator[tuple[LayerWork, Found]]:
        net = self.job.net
        for item in items:
            effects = logit_effects(net, item.layer.name) if writes_residual(item.layer.name) else None
            yield item, Found(effects, [Connection(src, reader, *edges(incoming(net, reader)))
                                        for src, reader in item.connections])

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
        for connection in found.connections:
            source_ids, reader_ids = (self.job.unit_ids(session, connection.source),
                                      self.job.unit_ids(session, connection.reader))
            session.execute(delete(Edge).where(Edge.kind == EdgeKind.WEIGHT, Edge.circuit_id.is_(None),
                                               Edge.dst_unit_id.in_(reader_ids.values()),
                                               Edge.src_unit_id.in_(source_ids.values())))
            rows = [{"src_unit_id": source_ids[src], "dst_unit_id": reader_ids[dst], "kind": EdgeKind.WEIGHT,
                     "weight": w} for (dst, src), w in zip(connection.pairs.tolist(), connection.weights.tolist())]
            if rows:  # a matrix of zeros has none (an insert of no rows would be one row of nothing)
                session.execute(insert(Edge), rows)
        return 0

    def _texts(self) -> list[str]:
        """Every token's text on its own, for the token lists of logit effects."""
        if self._vocabulary is None:
            self._vocabulary = vocabulary(self.job.spec, self.job.net.lm_head.weight.shape[0])
        return self._vocabulary
