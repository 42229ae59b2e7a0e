"""Vision stage ``render``: feature visualisations of the chosen units by objective, cut into fixed render batches.

A batch is rendered again (whole, so its images are the same as ever) only if one of its images is missing or its
blob is damaged, and only those images are saved, so after an interrupt the next run does only what is missing and
ends with the same assets an uninterrupted run would have made. Counted in images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from precompute.plan import Batch, batches
from precompute.stages import Job, Plan
from render.featvis import RenderConfig, Rendered, render_units
from store.schema import Asset, Layer, Unit, UnitImage


@dataclass(frozen=True)
class Work:
    """A render batch and the units of it to save: those whose image is missing or damaged (all with --force)."""

    batch: Batch
    save: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"{self.batch.layer.name} {self.batch.objective}"


class FeatvisStage:
    name = "render"

    def __init__(self, job: Job, selection: list, objectives: list[str], render: RenderConfig, batch_size: int):
        self.job, self.selection, self.objectives, self.render, self.batch_size = (
            job, selection, objectives, render, batch_size)
        self.weights = job.spec.card().get("weights", {}).get("sha256", "")  # recorded with every image

    def plan(self, session: Session) -> Plan:
        """An image counts as present only if its blob is intact (there, of the indexed size, hashing to its name);
        only images of the selection are checked."""
        found = {(layer, index, kind): (sha, size) for layer, index, kind, sha, size in session.execute(
            select(Layer.name, Unit.index, UnitImage.kind, Asset.sha256, Asset.size).select_from(UnitImage)
            .join(Unit).join(Layer).join(Asset).where(Layer.model_id == self.job.model_id)).tuples()}

        def present(key: tuple[str, int, str]) -> bool:
            return key in found and self.job.atlas.blob_problem(*found[key]) is None

        planned = batches(self.selection, self.objectives, self.batch_size)
        work = [Work(batch, save) for batch in planned if (save := tuple(
            unit for unit in batch.units
            if self.job.force or not present((batch.layer.name, unit, batch.objective))))]
        total = sum(len(batch.units) for batch in planned)
        by_layer: dict[str, int] = {}
        for item in work:
            by_layer[item.batch.layer.name] = by_layer.get(item.batch.layer.name, 0) + len(item.save)
        return Plan(work, planned=total, kept=total - sum(len(item.save) for item in work), by_layer=by_layer)

    def run(self, items: list[Work]) -> Iterator[tuple[Work, Rendered]]:
        net = self.job.net
        for item in items:
            layer = net.get_submodule(item.batch.layer.module)
            yield item, render_units(net, layer, item.batch.units, item.batch.objective, self.render, self.job.device)

    def save(self, session: Session, item: Work, rendered: Rendered) -> int:
        """Store the images of ``item.save`` from a rendered batch, replacing those units' rows (missing, damaged or
        forced); the batch's other images stay as they are."""
        unit_ids = self.job.unit_ids(session, item.batch.layer.name)
        session.execute(delete(UnitImage).where(UnitImage.kind == item.batch.objective,
                                                UnitImage.unit_id.in_([unit_ids[u] for u in item.save]))
                        .execution_options(synchronize_session=False))
        for unit, image, activation in zip(item.batch.units, rendered.images, rendered.activations.tolist()):
            if unit not in item.save:
                continue
            session.add(UnitImage(unit_id=unit_ids[unit], kind=item.batch.objective,
                                  asset_sha256=self.job.image_asset(session, image),
                                  params={**rendered.params, "weights_sha256": self.weights}, activation=activation))
        return len(item.save)
