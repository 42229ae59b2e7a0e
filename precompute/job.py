"""The precompute job: write a model's layers and units into an atlas, then run its stages (``precompute.stages``):
for a vision model dataset statistics, dataset examples, weights, layer views and feature visualisations, for a
language model token contexts, weights, the search index and task circuits (the index reads what contexts and
weights wrote, so search answers before the minutes of pruning); a vision model's search index comes last.

Resumable by construction. Every stage plans from what the atlas lacks, under the writer lock, before anything is
written; each item of its work (a render batch, a layer) is committed in one transaction with the run's progress,
after its blobs are in place. So after an interrupt (Ctrl-C or kill -9) the next run does only what is missing and
ends with the same atlas an uninterrupted run would have made. The whole run holds the atlas's writer lock, so a
second run waits and then plans afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from precompute.allocator import keep_freed_memory
from precompute.datasets.images import ImageDataset
from precompute.lm.circuits import CircuitConfig
from precompute.lm.tasks import TASKS, Task
from precompute.registry import ModelSpec, WeightsError
from precompute.stages import Job, Stage
from precompute.stages.circuits import CircuitsStage
from precompute.stages.contexts import ContextsConfig, ContextsStage
from precompute.stages.examples import ExamplesConfig, ExamplesStage
from precompute.stages.featvis import FeatvisStage
from precompute.stages.kernels import KernelsStage
from precompute.stages.layer_views import Input, LayerViewsStage
from precompute.stages.search import SearchStage
from precompute.stages.stats import StatsStage
from precompute.stages.weights import WeightsStage
from render.featvis import RenderConfig
from render.layer_views import ViewConfig
from store import Atlas
from store.keys import CardKey, ModelKind
from store.schema import (
    INTERRUPTED, INTERRUPTED_AT, Circuit, Edge, Example, Layer, LayerImage, Model, Run, Unit, UnitImage, utcnow,
)


@dataclass(frozen=True)
class Request:
    spec: ModelSpec
    atlas: Path
    selection: list  # [(LayerSpec, [unit, ...])] from precompute.plan.select
    objectives: list[str] = field(default_factory=lambda: ["channel"])  # vision
    render: RenderConfig = RenderConfig()  # vision
    batch_size: int = 32  # vision: units rendered together
    dataset: ImageDataset | None = None  # vision: the images units are ranked on (None: the model's built-in set)
    examples: ExamplesConfig = ExamplesConfig()  # vision
    caricatures: tuple[Input, ...] = ()  # vision: input images to caricature at every chosen layer
    views: ViewConfig = ViewConfig()  # vision: DeepDream and caricatures
    contexts: ContextsConfig = ContextsConfig()  # language
    circuits: CircuitConfig = CircuitConfig()  # language
    tasks: tuple[Task, ...] | None = None  # language: the tasks to find circuits for (None: every registered one)
    device: str = "cpu"
    force: bool = False  # redo what exists (e.g. with other settings) and replace it
    wait: bool = True  # wait for another writer of the atlas to finish, rather than refuse
    blobs: str | None = None  # a URL (s3://bucket/prefix) for a new atlas's blobs; None: where the atlas has them

    def config(self) -> dict:
        layers = {layer.name: len(units) for layer, units in self.selection}
        common = {"layers": layers, "device": self.device, "force": self.force}
        if self.spec.kind == ModelKind.LANGUAGE:
            return {**common, "contexts": asdict(self.contexts), "circuits": self.circuits.record(),
                    "tasks": [task.name for task in self.tasks] if self.tasks is not None else "all"}
        return {**common, "objectives": self.objectives, "render": asdict(self.render), "batch_size": self.batch_size,
                "dataset": self.images().provenance(), "examples": asdict(self.examples), "views": asdict(self.views),
                "caricatures": [{"name": source.name, "sha256": source.sha256} for source in self.caricatures]}

    def images(self) -> ImageDataset:
        """The dataset a vision model's units are ranked on."""
        return self.dataset or self.spec.default_examples()


def stages(request: Request, job: Job) -> list[Stage]:
    """A model kind's stages, in the order they run: the search index after the stages whose rows it indexes (a
    language model's contexts and weights; circuits add nothing to it, so it comes before their pruning)."""
    layers = [layer for layer, _ in request.selection]
    if request.spec.kind == ModelKind.LANGUAGE:
        blocks = 1 + max(int(layer.name.partition(".")[0]) for layer in request.spec.layers)  # names: {block}.{kind}
        tasks = list(request.tasks if request.tasks is not None else TASKS.values())
        return [ContextsStage(job, layers, request.contexts), WeightsStage(job, layers, blocks),
                SearchStage(job, layers), CircuitsStage(job, tasks, request.circuits)]
    return [StatsStage(job, layers, request.images()), ExamplesStage(job, layers, request.images(), request.examples),
            KernelsStage(job, layers), LayerViewsStage(job, layers, request.caricatures, request.views),
            FeatvisStage(job, request.selection, request.objectives, request.render, request.batch_size),
            SearchStage(job, layers)]


@dataclass
class Progress:
    """What the run is doing, kept in its ``runs.progress`` for a server showing a job that fills the atlas. Counts
    are over all its stages, in what they count: images for a vision model, units for a language model; and, for the
    stage at work, its items (render batches, layers, tasks), so that a stage that counts nothing (a language model's
    circuits, minutes of pruning after every unit is measured) still shows how far it is."""

    stage: str  # the stage at work ("stats", "examples", "weights", "layer views", "render"; "contexts", "weights",
    # "search index", "circuits"; "search index" last for a vision model), then "done"
    planned: int  # counted things the request asks for
    kept: int  # of them already in the atlas, intact
    todo: int  # of them to make: planned - kept
    done: int = 0  # of them saved so far
    current: str | None = None  # what is being worked on, e.g. "conv2 neuron", "0.mlp.post_act", or the stage's
    # words between saves ("circuit single_double_quote: sweep of 8, training, step 120/2000, loss ..., kept ... nodes")
    stage_items: int = 0  # the stage's items to make
    stage_done: int = 0  # of them saved so far
    counted: bool = True  # whether the stage's items add to ``done`` (False: it counts nothing, e.g. circuits)


def _ensure_model(session: Session, spec: ModelSpec, force: bool = False) -> Model:
    """Create or refresh the model, its layers and a row for every unit (so every unit URL resolves). Weights other
    than those the atlas's model was made with are refused unless ``force`` (its images would mix both)."""
    model = session.scalar(select(Model).where(Model.slug == spec.slug))
    if model is None:
        model = Model(slug=spec.slug)
        session.add(model)
    card = spec.card()
    made_with, given = ((model.card or {}).get(CardKey.WEIGHTS) or {}).get("sha256"), card.get(CardKey.WEIGHTS, {})
    if made_with and given.get("sha256") and made_with != given["sha256"] and not force:
        raise WeightsError(f"{spec.slug} in this atlas was made with weights of sha256 {made_with}; "
                           f"{given.get('file', 'these')} have {given['sha256']}. Its images would mix both: pass "
                           f"--force to redo what you select with the new weights, or use another atlas")
    model.title, model.kind, model.description, model.source = spec.title, spec.kind, spec.description, spec.source
    model.card = card
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


def _has_content(session: Session, model_id: int) -> bool:
    """Whether the atlas holds anything a stage made for the model, beyond the rows of its layers and units."""
    layers = select(Layer.id).where(Layer.model_id == model_id)
    units = select(Unit.id).where(Unit.layer_id.in_(layers))
    probes = (select(UnitImage.id).where(UnitImage.unit_id.in_(units)),
              select(Example.id).where(Example.unit_id.in_(units)),
              select(Edge.id).where(Edge.src_unit_id.in_(units)),
              select(LayerImage.id).where(LayerImage.layer_id.in_(layers)),
              select(Circuit.id).where(Circuit.model_id == model_id),
              select(Unit.id).where(Unit.id.in_(units), Unit.stats != {}))
    return any(session.scalar(probe.limit(1)) is not None for probe in probes)


def mark_interrupted(session: Session, why: str) -> list[int]:
    """Record on every unfinished run that it was interrupted, when and why (``store.schema.INTERRUPTED_AT``): under
    the writer lock no run is alive but the caller's, so a run without ``finished_at`` was killed or failed. Returns
    their ids."""
    now, found = utcnow().isoformat(), []
    for run in session.scalars(select(Run).where(Run.finished_at.is_(None))):
        if (run.progress or {}).get(INTERRUPTED_AT) is None:
            run.progress = {**(run.progress or {}), INTERRUPTED_AT: now, INTERRUPTED: why}
            found.append(run.id)
    return found


@contextmanager
def _stopped_runs(atlas: Atlas, spec: ModelSpec) -> Iterator[None]:
    """Around a run, under the writer lock: first, runs that a kill left unfinished are marked interrupted (their
    history then reads true); if this run fails, a model it registered and saved nothing for is removed again with its
    layers, units and runs (no half-registered model on the index), and otherwise its run is marked interrupted, with
    the reason."""
    with atlas.sessions.begin() as session:
        mark_interrupted(session, "killed: found unfinished, with no writer alive, by a later run")
        existed = session.scalar(select(Model.id).where(Model.slug == spec.slug)) is not None
    try:
        yield
    except BaseException as exc:
        why = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else f"failed: {type(exc).__name__}: {exc}"[:500]
        try:
            with atlas.sessions.begin() as session:
                model = session.scalar(select(Model).where(Model.slug == spec.slug))
                if model is not None and not existed and not _has_content(session, model.id):
                    layers = select(Layer.id).where(Layer.model_id == model.id)
                    session.execute(delete(Unit).where(Unit.layer_id.in_(layers)))
                    session.execute(delete(Layer).where(Layer.model_id == model.id))
                    session.execute(delete(Run).where(Run.model_id == model.id))
                    session.delete(model)
                else:
                    mark_interrupted(session, why)
        except Exception:  # noqa: BLE001 - the failure itself (a full disk, a damaged index) is what gets reported
            pass
        raise


def register(spec: ModelSpec, atlas: Path, wait: bool = True, on_wait: Callable[[], None] = lambda: None) -> None:
    """Write the model, its layers and units into the atlas (every page of it resolves), and nothing else."""
    with Atlas.open_for_writing(atlas, wait, on_wait) as opened, opened.sessions.begin() as session:
        _ensure_model(session, spec)


def run(request: Request, on_plan: Callable[[int, int], None] = lambda total, todo: None,
        on_saved: Callable[[str, int], None] = lambda label, saved: None,
        on_wait: Callable[[], None] = lambda: None, on_report: Callable[[str], None] = lambda current: None,
        on_layers: Callable[[dict[str, int]], None] = lambda todo: None,
        on_stage: Callable[[str, int, bool], None] = lambda name, items, counted: None) -> int:
    """Do the request; returns the number of counted things (images, units) this run saved. ``on_plan(total, todo)``
    gets the counts once the writer lock is held, ``on_stage(name, items, counted)`` the start of each stage with
    work (its items, and whether they add to the counts), ``on_saved(label, saved)`` follows every saved item,
    ``on_report(current)`` every word a stage gives between saves, ``on_wait()`` says that another writer holds the
    atlas and this run waits for it, ``on_layers(todo)`` gives the counted things to make per layer (vision: the
    feature visualisations), right after ``on_plan``."""
    keep_freed_memory()
    net = request.spec.load().to(torch.device(request.device))  # bad weights fail here, before anything is written
    with (Atlas.open_for_writing(request.atlas, request.wait, on_wait, request.blobs) as atlas,
          _stopped_runs(atlas, request.spec)):
        with atlas.sessions.begin() as session:
            model = _ensure_model(session, request.spec, request.force)
            job = Job(request.spec, atlas, model.id, torch.device(request.device), request.force, _net=net)
            planned = [(stage, stage.plan(session)) for stage in stages(request, job)]
            total, kept = sum(plan.planned for _, plan in planned), sum(plan.kept for _, plan in planned)
            progress = Progress(planned[0][0].name, planned=total, kept=kept, todo=total - kept)
            run_row = Run(model_id=model.id, config=request.config(), progress=asdict(progress))
            session.add(run_row)

        def commit_progress(session: Session) -> None:
            session.get(Run, run_row.id).progress = asdict(progress)

        def report(current: str) -> None:
            progress.current = current
            with atlas.sessions.begin() as session:
                commit_progress(session)
            on_report(current)

        job.report = report
        on_plan(total, total - kept)
        on_layers({layer: todo for _, plan in planned for layer, todo in plan.by_layer.items()})
        for stage, plan in planned:
            if not plan.items:
                continue
            progress.stage, progress.current = stage.name, plan.items[0].label
            progress.stage_items, progress.stage_done, progress.counted = len(plan.items), 0, plan.planned > 0
            with atlas.sessions.begin() as session:
                commit_progress(session)
            on_stage(stage.name, len(plan.items), progress.counted)
            for position, (item, result) in enumerate(stage.run(plan.items)):
                with atlas.batch() as session:
                    saved = stage.save(session, item, result)
                    progress.done += saved
                    progress.stage_done += 1
                    progress.current = plan.items[position + 1].label if position + 1 < len(plan.items) else None
                    commit_progress(session)
                on_saved(item.label, saved)
        progress.stage, progress.current = "done", None
        with atlas.sessions.begin() as session:
            commit_progress(session)
            session.get(Run, run_row.id).finished_at = utcnow()
        atlas.collect_garbage()
    return progress.done
