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
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from precompute.registry import ModelSpec
from store import Atlas
from render.images import to_png
from store.schema import Asset, Layer, Unit


@dataclass
class Plan:
    items: list  # the pending work, in order; each has a ``label`` ("conv2 neuron", "0.mlp.post_act") for progress
    planned: int = 0  # counted things the request asks of the stage
    kept: int = 0  # of them already in the atlas, intact
    by_layer: dict[str, int] = field(default_factory=dict)  # counted things to make per layer, for per-layer progress


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

    def image_asset(self, session: Session, image: torch.Tensor) -> str:
        """Store ``image`` ([3, h, w] in [0, 1]) as a PNG blob with its asset row, once however many rows use it;
        returns its sha256, which the rows that use it name in the same transaction."""
        return self.image_assets(session, [image])[0]

    def image_assets(self, session: Session, images: list[torch.Tensor]) -> list[str]:
        """``image_asset`` for many images at once: one query for the asset rows that exist and one insert for the
        rest, instead of a lookup and a flush per image (thousands of kernel pictures per layer pair)."""
        pngs = [to_png(image) for image in images]
        shas = [self.atlas.put_blob(png) for png in pngs]
        wanted = dict(zip(shas, zip(pngs, images)))
        present = set()
        for start in range(0, len(wanted), 500):  # SQLite caps the parameters of one statement
            chunk = list(wanted)[start:start + 500]
            present.update(session.scalars(select(Asset.sha256).where(Asset.sha256.in_(chunk))))
        new = [{"sha256": sha, "media_type": "image/png", "size": len(png), "width": image.shape[-1],
                "height": image.shape[-2]} for sha, (png, image) in wanted.items() if sha not in present]
        if new:
            session.execute(insert(Asset), new)
        return shas
