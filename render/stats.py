"""Per-unit activation statistics over a dataset sample: the baseline a feature visualisation is judged against."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from render.fast_forward import channels_last, fast_forward
from render.hooks import activations


@torch.no_grad()
def channel_statistics(model: nn.Module, layers: Mapping[str, nn.Module], images: torch.Tensor,
                       batch_size: int = 256) -> dict[str, dict[str, torch.Tensor]]:
    """For each layer: mean, std and max over images of every channel's spatial mean, each a [channels] tensor."""
    was_training = model.training
    model.eval()
    per_layer: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    try:
        with fast_forward():
            for chunk in images.split(batch_size):
                for name, acts in activations(model, layers, channels_last(chunk)).items():
                    per_layer[name].append(acts.mean(dim=(-2, -1)))  # [chunk, channels]
    finally:
        model.train(was_training)
    stats = {}
    for name, chunks in per_layer.items():
        values = torch.cat(chunks)  # [images, channels]
        stats[name] = {"mean": values.mean(0), "std": values.std(0), "max": values.max(0).values}
    return stats
