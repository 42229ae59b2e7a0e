"""Vision stage ``stats``: each unit's dataset statistics (mean, std and max over held-out images of its channel's
spatial mean), the baseline its feature visualisations are judged against. One pass over the sample covers every
chosen layer that lacks them; it counts nothing in the run's progress (it is quick, and saves no image)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from precompute.datasets.images import ImageDataset, to_tensor
from precompute.registry import LayerSpec
from precompute.stages import Job, Plan
from render.stats import channel_statistics
from store.keys import Stat
from store.schema import Layer, Unit


SAMPLE = 512  # images of the dataset measured, for a model without a sample of its own


@dataclass(frozen=True)
class Layers:
    layers: tuple[str, ...]

    @property
    def label(self) -> str:
        return ", ".join(self.layers)


class StatsStage:
    name = "stats"

    def __init__(self, job: Job, layers: list[LayerSpec], images: ImageDataset):
        self.job, self.layers, self.images = job, layers, images  # images: the sample when the model has none

    def plan(self, session: Session) -> Plan:
        missing = tuple(layer.name for layer in self.layers if session.scalar(
            select(Unit.id).join(Layer).where(Layer.model_id == self.job.model_id, Layer.name == layer.name,
                                              Unit.stats == {})))
        return Plan([Layers(missing)] if missing else [])

    def run(self, items: list[Layers]) -> Iterator[tuple[Layers, dict]]:
        spec, net = self.job.spec, self.job.net
        for item in items:
            sample = spec.dataset_sample()
            if sample is None:  # evenly spread over the dataset the examples are ranked on
                positions = torch.linspace(0, len(self.images) - 1, min(SAMPLE, len(self.images))).long().unique()
                sample = to_tensor(self.images.read(positions.tolist())[0])
            sample = sample.to(self.job.device)  # [n, 3, size, size] in [0, 1]
            stats = channel_statistics(net, {n: net.get_submodule(spec.layer(n).module) for n in item.layers}, sample)
            yield item, {"stats": stats, "n": len(sample)}

    def save(self, session: Session, item: Layers, result: dict) -> int:
        for name in item.layers:
            per_unit = {key: values.tolist() for key, values in result["stats"][name].items()}
            session.execute(update(Unit), [
                {"id": unit_id, "stats": {
                    Stat.DATASET_MEAN: per_unit["mean"][index], Stat.DATASET_STD: per_unit["std"][index],
                    Stat.DATASET_MAX: per_unit["max"][index], Stat.N: result["n"],
                    Stat.MEASURE: "spatial mean of the channel over held-out dataset images"}}
                for index, unit_id in self.job.unit_ids(session, name).items()])
        return 0
