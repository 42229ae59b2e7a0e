"""The precompute job: write a model's layers, units, statistics and feature visualisations into an atlas.

Resumable by construction. Each render batch is committed in one transaction after its blobs are in place, and a
batch is redone only if one of its images is missing, so after an interrupt (Ctrl-C or kill -9) the next run does
only what is missing and ends with the same assets an uninterrupted run would have made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from precompute.plan import Batch, batches
from precompute.registry import ModelSpec
from render.featvis import RenderConfig, Rendered, render_units
from render.images import to_png
from render.stats import channel_statistics
from store import Atlas
from store.schema import Asset, Layer, Model, Run, Unit, UnitImage, utcnow


@dataclass(frozen=True)
class Request:
    spec: ModelSpec
    atlas: Path
    selection: list  # [(LayerSpec, [unit, ...])] from precompute.plan.select
    objectives: list[str] = field(default_factory=lambda: ["channel"])
    render: RenderConfig = RenderConfig()
    batch_size: int = 32
    device: str = "cpu"
    force: bool = False  # re-render images that exist (e.g. with other settings) and replace them

    def config(self) -> dict:
        return {"layers": {layer.name: len(units) for layer, units in self.selection},
                "objectives": self.objectives, "render": asdict(self.render), "batch_size": self.batch_size,
                "device": self.device, "force": self.force}


def _ensure_model(session: Session, spec: ModelSpec) -> Model:
    """Create or refresh the model, its layers and a row for every unit (so every unit URL resolves)."""
    model = session.scalar(select(Model).where(Model.slug == spec.slug))
    if model is None:
        model = Model(slug=spec.slug)
        session.add(model)
    model.title, model.kind, model.description, model.source = spec.title, spec.kind, spec.description, spec.source
    model.card = spec.card()
    session.flush()
    existing = {layer.name: layer for layer in model.layers}
    for position, layer_spec in enumerate(spec.layers):
        layer = existing.get(layer_spec.name) or Layer(model_id=model.id, name=layer_spec.name)
        layer.position, layer.kind, layer.n_units = position, layer_spec.kind, layer_spec.units
        layer.shape = list(layer_spec.shape)
        session.add(layer)
        session.flush()
        have = set(session.scalars(select(Unit.index).where(Unit.layer_id == layer.id)))
        session.add_all(Unit(layer_id=layer.id, index=i, stats={}) for i in range(layer_spec.units) if i not in have)
    return model


def _unit_ids(session: Session, model: Model, layer_name: str) -> dict[int, int]:
    rows = session.execute(select(Unit.index, Unit.id).join(Layer).where(
        Layer.model_id == model.id, Layer.name == layer_name))
    return {index: unit_id for index, unit_id in rows}


def _fill_statistics(atlas: Atlas, model: Model, spec: ModelSpec, net: torch.nn.Module, names: list[str],
                     device: torch.device) -> None:
    """Dataset statistics for every unit of the chosen layers that lacks them (one pass over the sample)."""
    with atlas.sessions() as session:
        missing = [name for name in names if session.scalar(
            select(Unit.id).join(Layer).where(Layer.model_id == model.id, Layer.name == name, Unit.stats == {}))]
    if not missing:
        return
    sample = spec.dataset_sample().to(device)
    stats = channel_statistics(net, {n: net.get_submodule(spec.layer(n).module) for n in missing}, sample)
    with atlas.sessions.begin() as session:
        for name in missing:
            per_unit = {key: values.tolist() for key, values in stats[name].items()}
            for index, unit_id in _unit_ids(session, model, name).items():
                session.get(Unit, unit_id).stats = {
                    "dataset_mean": per_unit["mean"][index], "dataset_std": per_unit["std"][index],
                    "dataset_max": per_unit["max"][index], "n": len(sample),
                    "measure": "spatial mean of the channel over held-out dataset images"}


def _pending(atlas: Atlas, model: Model, planned: list[Batch]) -> list[Batch]:
    with atlas.sessions() as session:
        done = set(session.execute(select(Layer.name, Unit.index, UnitImage.kind).select_from(UnitImage)
                                   .join(Unit).join(Layer).where(Layer.model_id == model.id)).tuples())
    return [b for b in planned if any((b.layer.name, u, b.objective) not in done for u in b.units)]


def _save_batch(atlas: Atlas, model: Model, batch: Batch, rendered: Rendered, weights: str, replace: bool) -> None:
    """Store a rendered batch in one transaction: new images are added, existing ones kept unless ``replace``."""
    with atlas.sessions.begin() as session:
        unit_ids = _unit_ids(session, model, batch.layer.name)
        existing = {image.unit_id: image for image in session.scalars(select(UnitImage).where(
            UnitImage.kind == batch.objective, UnitImage.unit_id.in_(unit_ids.values())))}
        for unit, image, activation in zip(batch.units, rendered.images, rendered.activations.tolist()):
            if unit_ids[unit] in existing:
                if not replace:
                    continue
                session.delete(existing[unit_ids[unit]])
                session.flush()
            png = to_png(image)
            sha = atlas.put_blob(png)
            if session.get(Asset, sha) is None:
                session.add(Asset(sha256=sha, media_type="image/png", size=len(png),
                                  width=image.shape[-1], height=image.shape[-2]))
                session.flush()
            session.add(UnitImage(unit_id=unit_ids[unit], kind=batch.objective, asset_sha256=sha,
                                  params={**rendered.params, "weights_sha256": weights}, activation=activation))


def run(request: Request, on_plan: Callable[[int, int], None] = lambda total, todo: None,
        on_batch: Callable[[Batch], None] = lambda batch: None) -> int:
    """Do the request; returns the number of images rendered. ``on_plan(total, todo)`` gets image counts."""
    atlas = Atlas.open_for_writing(request.atlas)
    with atlas.sessions.begin() as session:
        model = _ensure_model(session, request.spec)
        run_row = Run(model_id=model.id, config=request.config())
        session.add(run_row)
    planned = batches(request.selection, request.objectives, request.batch_size)
    todo = planned if request.force else _pending(atlas, model, planned)
    on_plan(sum(len(b.units) for b in planned), sum(len(b.units) for b in todo))
    device = torch.device(request.device)
    net = request.spec.load().to(device)
    _fill_statistics(atlas, model, request.spec, net, [layer.name for layer, _ in request.selection], device)
    weights = model.card.get("weights", {}).get("sha256", "")  # the card _ensure_model just stored
    for batch in todo:
        layer = net.get_submodule(batch.layer.module)
        rendered = render_units(net, layer, batch.units, batch.objective, request.render, device)
        _save_batch(atlas, model, batch, rendered, weights, request.force)
        on_batch(batch)
    with atlas.sessions.begin() as session:
        session.get(Run, run_row.id).finished_at = utcnow()
    return sum(len(b.units) for b in todo)
