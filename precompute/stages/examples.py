"""Vision stage ``examples``: every chosen layer's dataset examples, in one pass over the dataset
(``render.examples``): per unit its top images by spatial max, each with the box of the input its receptive field at
the max cell sees, a few random images from the middle of its distribution, and its quartiles.

Every image an example uses is stored once, whole, as the model saw it; an example is a box into it
(``store.keys.CropKey``), so an image shared by fifty units costs one blob. A layer is pending while one of its units
lacks top examples or has them from a dataset of another name (all chosen layers with --force); the pass covers the
pending layers together and saves them in one transaction. Counts nothing in the run's progress: it reports the
images it has read instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from precompute.datasets.images import ImageDataset, to_tensor
from precompute.registry import LayerSpec
from precompute.stages import Job, Plan
from render.examples import ExampleCollector, Ranked, sample_positions
from render.fast_forward import channels_last, fast_forward
from render.hooks import stream
from render.receptive_field import ReceptiveField, receptive_field
from store.keys import CropKey, ExampleKind, Stat
from store.schema import Example, Layer, Unit


@dataclass(frozen=True)
class ExamplesConfig:
    top: int = 32  # top examples per unit
    middle: int = 6  # middle examples per unit
    sample: int = 1024  # images whose values give the quartiles and the middle examples
    batch: int = 64  # images per forward pass
    seed: int = 0


@dataclass(frozen=True)
class Pass:
    layers: tuple[LayerSpec, ...]

    @property
    def label(self) -> str:
        return "examples " + ", ".join(layer.name for layer in self.layers)


@dataclass(frozen=True)
class Found:
    ranked: dict[str, Ranked]
    fields: dict[str, ReceptiveField]
    pictures: dict[int, torch.Tensor]  # dataset position -> [3, size, size] in [0, 1]: every image an example uses


def examples_pass(net: torch.nn.Module, modules: dict[str, torch.nn.Module], units: dict[str, int],
                  dataset: ImageDataset, config: ExamplesConfig, device: torch.device,
                  report: Callable[[str], None] = lambda _: None) -> ExampleCollector:
    """One forward pass over the dataset, up to the deepest of ``modules`` (each with ``units[name]`` channels),
    ranking every unit as it goes (``bench/examples_pass.py`` times it against the plain forward pass)."""
    collector = ExampleCollector(units, config.top, sample_positions(len(dataset), config.sample, config.seed),
                                 config.middle, config.seed, device)
    with torch.no_grad(), fast_forward():
        for images, positions in dataset.batches(config.batch):
            x = to_tensor(images).to(device)  # [batch, 3, size, size] in [0, 1]: the net maps them to its input
            at = torch.tensor(positions)
            stream(net, modules, channels_last(x),
                   lambda name, acts: collector.update_layer(name, acts.flatten(2), at))  # [batch, units, cells]
            report(f"examples: {collector.images:,} of {len(dataset):,} images")
    return collector


class ExamplesStage:
    name = "examples"

    def __init__(self, job: Job, layers: list[LayerSpec], dataset: ImageDataset, config: ExamplesConfig):
        self.job, self.layers, self.dataset, self.config = job, layers, dataset, config

    def plan(self, session: Session) -> Plan:
        pending = tuple(layer for layer in self.layers if self.job.force or self._lacking(session, layer.name))
        return Plan([Pass(pending)] if pending else [])

    def _lacking(self, session: Session, layer: str) -> bool:
        """Whether a unit of ``layer`` has no top examples, or has them from a dataset of another name."""
        units = select(Unit.id).join(Layer).where(Layer.model_id == self.job.model_id, Layer.name == layer)
        with_top = select(Example.unit_id).where(Example.kind == ExampleKind.TOP)
        other = select(Example.id).where(Example.kind == ExampleKind.TOP, Example.unit_id.in_(units),
                                         Example.source[CropKey.DATASET].as_string() != self.dataset.name)
        return (session.scalar(units.where(Unit.id.not_in(with_top)).limit(1)) is not None
                or session.scalar(other.limit(1)) is not None)

    def run(self, items: list[Pass]) -> Iterator[tuple[Pass, Found]]:
        spec, net, device, config = self.job.spec, self.job.net, self.job.device, self.config
        for item in items:
            modules = {layer.name: net.get_submodule(layer.module) for layer in item.layers}
            collector = examples_pass(net, modules, {layer.name: layer.units for layer in item.layers}, self.dataset,
                                      config, device, self.job.report)
            ranked = {layer.name: collector.ranked(layer.name) for layer in item.layers}
            shape = (3, spec.preprocess.size, spec.preprocess.size)
            fields = {name: receptive_field(net, module, shape, device) for name, module in modules.items()}
            used = sorted({p for r in ranked.values() for p in (*r.top_images.flatten().tolist(),
                                                                *r.middle_images.flatten().tolist()) if p >= 0})
            images, read = self.dataset.read(used)
            yield item, Found(ranked, fields, dict(zip(read, to_tensor(images))))

    def save(self, session: Session, item: Pass, found: Found) -> int:
        assets = dict(zip(found.pictures, self.job.image_assets(session, list(found.pictures.values()))))
        for layer in item.layers:
            unit_ids = self.job.unit_ids(session, layer.name)
            session.execute(delete(Example).where(Example.unit_id.in_(unit_ids.values()),
                                                  Example.kind.in_([ExampleKind.TOP, ExampleKind.MIDDLE]))
                            .execution_options(synchronize_session=False))
            ranked, field = found.ranked[layer.name], found.fields[layer.name]
            rows = []
            for kind, values, images, cells in (
                    (ExampleKind.TOP, ranked.top_values, ranked.top_images, ranked.top_cells),
                    (ExampleKind.MIDDLE, ranked.middle_values, ranked.middle_images, ranked.middle_cells)):
                for unit, (unit_values, unit_images, unit_cells) in enumerate(
                        zip(values.tolist(), images.tolist(), cells.tolist())):
                    rank = 0
                    for value, position, cell in zip(unit_values, unit_images, unit_cells):
                        if position not in assets:  # no image there (fewer than k), or it failed to decode
                            continue
                        y, x = divmod(cell, field.grid[1])
                        rows.append({"unit_id": unit_ids[unit], "kind": kind, "rank": rank, "activation": value,
                                     "asset_sha256": assets[position], "source": {
                                         CropKey.DATASET: self.dataset.name, CropKey.ITEM: self.dataset.items[position],
                                         CropKey.CELL: [y, x], CropKey.GRID: list(field.grid),
                                         CropKey.BOX: list(field.box(y, x))}})
                        rank += 1
            if rows:
                session.execute(insert(Example), rows)
            stats = dict(session.execute(select(Unit.id, Unit.stats).where(Unit.id.in_(unit_ids.values()))).all())
            session.execute(update(Unit), [
                {"id": unit_id, "stats": {**stats[unit_id], Stat.QUARTILES: ranked.quartiles[index].tolist(),
                                          Stat.EXAMPLES_N: ranked.images}}
                for index, unit_id in unit_ids.items()])
        return 0
