"""Feature visualisation by optimisation (lucid's recipe), many units of one layer rendered as one batch.

Batch slot ``b`` is optimised for ``units[b]``; slots never interact (the loss is a sum of per-slot terms and the model
is in eval mode), so one batch costs about one forward/backward of the network cut at the target layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from render.fast_forward import channels_last, fast_forward
from render.hooks import activations
from render.lucent_compat import fft_decorrelated_image, seeded, standard_transforms
from render.relu import redirected_relus

# An objective maps a layer's activations [batch, channels, h, w] and one unit per slot [batch] to a score per slot.
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def channel(acts: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Mean activation of the slot's channel over all positions."""
    return acts[torch.arange(len(units)), units].mean(dim=(-2, -1))


def neuron(acts: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Activation of the slot's channel at the centre position."""
    h, w = acts.shape[-2:]
    return acts[torch.arange(len(units)), units, h // 2, w // 2]


OBJECTIVES: dict[str, Objective] = {"channel": channel, "neuron": neuron}

# Redirected ReLU gradients are for escaping dead starts; past the first quarter of the steps they change nothing we
# measured (same activations, same dead count on TinyVision) and cost about 65% more per step.
REDIRECTED_FRACTION = 0.25


# With the network in bfloat16 for every step, images reached 94-99% of the objective float32 ones reach (mean over
# units, per layer); with the last quarter of the steps in float32, 97-101%; another float32 seed, 96-104%
# (bench/render_precision.py).
FLOAT32_TAIL_FRACTION = 0.25

LUCID_LR = 0.05  # lucid's (and Microscope's) Adam step, tuned for 224 px
LUCID_SIZE = 128  # from this side up the recipe's own step is used


def default_lr(size: int) -> float:
    """Lucid's 0.05 at the sizes it was tuned for; small images need a larger step (``bench/featvis_lr.py``)."""
    return LUCID_LR if size >= LUCID_SIZE else RenderConfig.lr


@dataclass(frozen=True)
class RenderConfig:
    steps: int = 512
    size: int = 64
    lr: float = 0.1  # lucid's 0.05 is tuned for 224 px; small images need a larger step (bench/featvis_lr.py)
    seed: int = 0
    precision: str = "float32"  # of the network during optimisation (render.fast_forward); "bfloat16" is faster


@dataclass(frozen=True)
class Rendered:
    images: torch.Tensor  # [batch, 3, size, size] in [0, 1], on the CPU
    activations: torch.Tensor  # [batch] the objective of each slot's unit on its final, untransformed image
    params: dict  # how the batch was made, to record beside every image


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no weight gradients for the duration; both restored afterwards."""
    was_training = model.training
    grads = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        yield
    finally:
        model.train(was_training)
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)


def render_units(model: nn.Module, layer: nn.Module, units: Sequence[int], objective: str, config: RenderConfig,
                 device: torch.device | str = "cpu") -> Rendered:
    """Optimise one image per unit of ``layer`` for ``objective`` ("channel" or "neuron")."""
    device = torch.device(device)
    score = OBJECTIVES[objective]
    slots = torch.tensor(list(units), device=device)
    target = {"layer": layer}
    with frozen(model), seeded(config.seed):
        params, image = fft_decorrelated_image(config.size, len(slots), device)
        with torch.no_grad(), fast_forward():
            stride = max(1, config.size // activations(model, target, image())["layer"].shape[-1])
        transform, described = standard_transforms(config.size / 224, device, stride)
        optimiser = torch.optim.Adam(params, lr=config.lr)

        def step(precision: str) -> None:
            optimiser.zero_grad()
            with fast_forward(precision, device):
                acts = activations(model, target, channels_last(transform(image())))["layer"]
            loss = -score(acts.float(), slots).sum()
            loss.backward()
            optimiser.step()

        warm = int(config.steps * REDIRECTED_FRACTION)
        tail = int(config.steps * FLOAT32_TAIL_FRACTION) if config.precision != "float32" else 0
        precisions = [config.precision] * (config.steps - tail) + ["float32"] * tail  # one per step
        with redirected_relus(model):
            for precision in precisions[:warm]:
                step(precision)
        for precision in precisions[warm:]:
            step(precision)
        with torch.no_grad(), fast_forward("float32"):
            final = image()
            achieved = score(activations(model, target, channels_last(final))["layer"], slots)
    params = {**asdict(config), "objective": objective, "param": "fft+decorrelate", "transforms": described,
              "optimizer": "adam", "relu_gradient": f"redirected for the first {warm} steps", "batch": list(units),
              **({"float32_steps": f"the last {tail}"} if tail else {})}
    return Rendered(final.cpu(), achieved.cpu(), params)
