"""The precompute job: write a model's layers, units, statistics and feature visualisations into an atlas.

Resumable by construction. Each render batch is committed in one transaction after its blobs are in place. A batch is
rendered again (whole, so its images are the same as ever) only if one of its images is missing or its blob is damaged,
and only those images are saved, so after an interrupt (Ctrl-C or kill -9) the next run does only what is missing and
ends with the same assets an uninterrupted run would have made. The whole run holds the atlas's writer lock, so a
second run waits and then plans afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from sqlalchemy import delete, select
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
    wait: bool = True  # wait for another writer of the atlas to finish, rather than refuse

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


@dataclass(frozen=True)
class Work:
    """A render batch and the units of it to save: those whose image is missing or damaged (all with --force)."""

    batch: Batch
    save: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"{self.batch.layer.name} {self.batch.objective}"


@dataclass
class Progress:
    """What the run is doing, kept in its ``runs.progress`` for a server showing a job that fills the atlas."""

    stage: str  # "stats", "render", "done"
    planned: int  # images in the selection
    kept: int  # of them already in the atlas, intact
    todo: int  # of them to render: planned - kept
    done: int = 0  # of them saved so far
    current: str | None = None  # the batch being rendered, e.g. "conv2 neuron"


def _plan(session: Session, atlas: Atlas, model: Model, request: Request) -> tuple[int, list[Work]]:
    """The number of images the request asks for, and the work to do. An image counts as present only if its blob
    is intact (there, of the indexed size, hashing to its name); only images of the selection are checked."""
    found = {(layer, index, kind): (sha, size) for layer, index, kind, sha, size in session.execute(
        select(Layer.name, Unit.index, UnitImage.kind, Asset.sha256, Asset.size).select_from(UnitImage)
        .join(Unit).join(Layer).join(Asset).where(Layer.model_id == model.id)).tuples()}

    def present(key: tuple[str, int, str]) -> bool:
        return key in found and atlas.blob_problem(*found[key]) is None

    planned = batches(request.selection, request.objectives, request.batch_size)
    work = [Work(batch, save) for batch in planned if (save := tuple(
        unit for unit in batch.units if request.force or not present((batch.layer.name, unit, batch.objective))))]
    return sum(len(batch.units) for batch in planned), work


def _save_batch(session: Session, atlas: Atlas, model: Model, work: Work, rendered: Rendered, weights: str) -> None:
    """Store the images of ``work.save`` from a rendered batch, replacing those units' rows (missing, damaged or
    forced); the batch's other images stay as they are."""
    unit_ids = _unit_ids(session, model, work.batch.layer.name)
    session.execute(delete(UnitImage).where(UnitImage.kind == work.batch.objective,
                                            UnitImage.unit_id.in_([unit_ids[u] for u in work.save]))
                    .execution_options(synchronize_session=False))
    for unit, image, activation in zip(work.batch.units, rendered.images, rendered.activations.tolist()):
        if unit not in work.save:
            continue
        png = to_png(image)
        sha = atlas.put_blob(png)
        if session.get(Asset, sha) is None:
            session.add(Asset(sha256=sha, media_type="image/png", size=len(png),
                              width=image.shape[-1], height=image.shape[-2]))
            session.flush()
        session.add(UnitImage(unit_id=unit_ids[unit], kind=work.batch.objective, asset_sha256=sha,
                              params={**rendered.params, "weights_sha256": weights}, activation=activation))


def run(request: Request, on_plan: Callable[[int, int], None] = lambda total, todo: None,
        on_batch: Callable[[Batch, int], None] = lambda batch, saved: None,
        on_wait: Callable[[], None] = lambda: None) -> int:
    """Do the request; returns the number of images this run saved. ``on_plan(total, todo)`` gets image counts once
    the writer lock is held, ``on_batch(batch, saved)`` follows every saved batch, ``on_wait()`` says that another
    writer holds the atlas and this run waits for it."""
    with Atlas.open_for_writing(request.atlas, request.wait, on_wait) as atlas:
        with atlas.sessions.begin() as session:
            model = _ensure_model(session, request.spec)
            total, work = _plan(session, atlas, model, request)
            todo = sum(len(item.save) for item in work)
            progress = Progress("stats", planned=total, kept=total - todo, todo=todo)
            run_row = Run(model_id=model.id, config=request.config(), progress=asdict(progress))
            session.add(run_row)
        on_plan(total, todo)
        device = torch.device(request.device)
        net = request.spec.load().to(device)
        _fill_statistics(atlas, model, request.spec, net, [layer.name for layer, _ in request.selection], device)
        weights = model.card.get("weights", {}).get("sha256", "")  # the card _ensure_model just stored
        progress.stage, progress.current = "render", work[0].label if work else None
        with atlas.sessions.begin() as session:
            session.get(Run, run_row.id).progress = asdict(progress)
        for position, item in enumerate(work):
            layer = net.get_submodule(item.batch.layer.module)
            rendered = render_units(net, layer, item.batch.units, item.batch.objective, request.render, device)
            with atlas.batch() as session:
                _save_batch(session, atlas, model, item, rendered, weights)
                progress.done += len(item.save)
                progress.current = work[position + 1].label if position + 1 < len(work) else None
                session.get(Run, run_row.id).progress = asdict(progress)
            on_batch(item.batch, len(item.save))
        progress.stage = "done"
        with atlas.sessions.begin() as session:
            finished = session.get(Run, run_row.id)
            finished.progress, finished.finished_at = asdict(progress), utcnow()
        atlas.collect_garbage()
    return progress.done
