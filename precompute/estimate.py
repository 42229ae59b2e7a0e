"""What a vision precompute will do and how long its feature visualisations (almost all of its time) will take here:
per chosen layer the units, render batches and images, and the time of one batch step measured on this machine at
the run's size and batch, extrapolated to the run's steps. ``atlascope precompute --dry-run`` prints it and stops."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch
from rich.console import Console
from rich.table import Table

from precompute.allocator import keep_freed_memory
from precompute.plan import batches
from precompute.registry import ModelSpec
from render.featvis import RenderConfig, render_units

# Timed steps per layer (a render of this many, its setup included), after an untimed warm-up. Four steps mix the
# kinds a full render has in its proportions: a quarter with redirected ReLU gradients and, under bfloat16, a
# quarter in float32 (render.featvis).
MEASURED_STEPS = 4


@dataclass(frozen=True)
class LayerEstimate:
    layer: str
    units: int
    batches: int
    images: int
    seconds_per_step: float  # one step of one full batch

    def seconds(self, steps: int) -> float:
        return self.batches * steps * self.seconds_per_step


def step_time(net: torch.nn.Module, module: torch.nn.Module, units: list[int], objective: str, config: RenderConfig,
              device: torch.device) -> float:
    """Seconds per optimisation step of a batch of ``units``: a render of ``MEASURED_STEPS`` steps (its setup, one
    forward pass, included) after an untimed one-step warm-up."""
    warm = replace(config, steps=1)
    render_units(net, module, units, objective, warm, device)
    started = time.perf_counter()
    render_units(net, module, units, objective, replace(config, steps=MEASURED_STEPS), device)
    return (time.perf_counter() - started) / MEASURED_STEPS


def estimate(spec: ModelSpec, selection: list, objectives: list[str], config: RenderConfig, batch_size: int,
             device: torch.device, on_layer=lambda estimate: None) -> list[LayerEstimate]:
    keep_freed_memory()  # as the job does: the allocator decides much of a large batch's step time
    net = spec.load().to(device)
    found = []
    for layer, units in selection:
        planned = batches([(layer, units)], objectives, batch_size)
        first = planned[0]
        seconds = step_time(net, net.get_submodule(layer.module), list(first.units), first.objective, config, device)
        found.append(LayerEstimate(layer.name, len(units), len(planned), len(units) * len(objectives), seconds))
        on_layer(found[-1])
    return found


def _duration(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


def print_plan(spec: ModelSpec, selection: list, objectives: list[str], config: RenderConfig, batch_size: int,
               device: str, console: Console) -> list[LayerEstimate]:
    """Measure and print the plan: one row per layer as it is measured, then the totals."""
    console.print(f"{spec.slug}: feature visualisations of {sum(len(u) for _, u in selection):,} units in "
                  f"{len(selection)} layers, objectives {', '.join(objectives)}, {config.steps} steps at "
                  f"{config.size} px, lr {config.lr}, {config.precision}, batches of {batch_size}, on {device}; "
                  f"measuring a {MEASURED_STEPS}-step render of one batch per layer…")
    found = estimate(spec, selection, objectives, config, batch_size, torch.device(device),
                     lambda e: console.print(f"  {e.layer}: {e.units} units, {e.batches} batches, "
                                             f"{e.seconds_per_step:.2f} s per batch step → "
                                             f"{_duration(e.seconds(config.steps))}"))
    table = Table("layer", "units", "batches", "images", "s / batch step", "estimated")
    for e in found:
        table.add_row(e.layer, f"{e.units:,}", f"{e.batches:,}", f"{e.images:,}", f"{e.seconds_per_step:.2f}",
                      _duration(e.seconds(config.steps)))
    total = sum(e.seconds(config.steps) for e in found)
    table.add_row("total", f"{sum(e.units for e in found):,}", f"{sum(e.batches for e in found):,}",
                  f"{sum(e.images for e in found):,}", "", _duration(total))
    console.print(table)
    console.print(f"estimated feature-visualisation time: {_duration(total)} ({total / 3600:.1f} h) at the rate "
                  f"measured now; dataset examples, weights and layer views add minutes (one pass each)")
    return found
