"""The precompute job's stages. A stage is one kind of thing the job writes for a model's units (feature
visualisations, dataset statistics, token contexts, weights ...), in four steps the job (``precompute.job``) drives:

- ``plan(session)``: what the request asks of this stage and what of it is missing from the atlas (its pending work,
  in items, each saved in one transaction), read under the writer lock before anything is written;
- ``run(items)``: the torch work, yielding ``(item, result)`` as results become ready;
- ``save(session, item, result)``: the item's rows, in the job's transaction for it, replacing what was there.

A stage's pending work is exactly what the store lacks, so a rerun does only that, and nothing once all is saved.
Progress is counted in the things a stage's items save (images, units); a stage that is a quick companion of another
(dataset statistics before feature visualisation, weights after token contexts) counts nothing of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from precompute.registry import ModelSpec
from store import Atlas
from store.schema import Layer, Unit


@dataclass
class Plan:
    items: list  # the pending work, in order; each has a ``label`` ("conv2 neuron", "0.mlp.post_act") for progress
    planned: int = 0  # counted things the request asks of the stage
    kept: int = 0  # of them already in the atlas, intact


class Stage(Protocol):
    name: str  # the run's progress.stage while it works

    def plan(self, session: Session) -> Plan: ...

    def run(self, items: list) -> Iterator[tuple[Any, Any]]: ...

    def save(self, session: Session, item: Any, result: Any) -> int:
        """Write the item's rows; returns how many counted things it saved."""
        ...


@dataclass
class Job:
    """What every stage of a run shares: the request's model, the atlas and its model row, the network."""

    spec: ModelSpec
    atlas: Atlas
    model_id: int
    device: torch.device
    force: bool  # redo what exists
    report: Callable[[str], None] = lambda current: None  # a stage's word on what it is doing, between saves
    _net: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def net(self) -> torch.nn.Module:
        """The model, loaded once, in eval mode on the run's device."""
        if self._net is None:
            self._net = self.spec.load().to(self.device)
        return self._net

    def unit_ids(self, session: Session, layer: str) -> dict[int, int]:
        """Unit index -> row id of every unit of one of the model's layers."""
        rows = session.execute(select(Unit.index, Unit.id).join(Layer).where(
            Layer.model_id == self.model_id, Layer.name == layer))
        return {index: unit_id for index, unit_id in rows}
