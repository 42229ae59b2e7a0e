"""Layer views (lucid's DeepDream and caricature recipes): one optimised image that shows a whole layer at once.

Feature visualisation (``render.featvis``) drives one unit per image; these objectives read every channel of the
layer, so they show the mix of features a layer responds to, and, for a caricature, which of them a given input
excites. Same image parameterisation and robustness transforms as featvis, so the pictures are comparable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from render.fast_forward import channels_last, fast_forward
from render.featvis import frozen
from render.hooks import activations
from render.lucent_compat import fft_decorrelated_image, seeded, standard_transforms

# lucid's floor on the cosine term: without it an image anti-aligned with the target (cos < 0) would be rewarded for a
# negative dot product raised to an odd power, and a near-orthogonal start would get almost no gradient.
COSINE_FLOOR = 0.1


@dataclass(frozen=True)
class ViewConfig:
    # On TinyVision at 64 px (2 CPU cores), 256 steps take about 1.5 s for a DeepDream and 2 s for a caricature. With
    # lucid's lr 0.05, or 128 steps, conv2's DeepDream stalls at half the objective with a grey patch left in the image;
    # lr 0.2 ends lower on conv4 and its caricatures align less with their inputs.
    steps: int = 256
    size: int = 64  # rendered image side, pixels
    lr: float = 0.1
    seed: int = 0
    power: float = 1.0  # caricature: exponent on the cosine term; 0 is plain dot-product feature inversion


@dataclass(frozen=True)
class View:
    image: torch.Tensor  # [3, size, size] in [0, 1], on the CPU
    objective: float  # the objective on the final, untransformed image
    params: dict  # how it was made, to store beside the image


def squared_mean(acts: torch.Tensor) -> torch.Tensor:
    """DeepDream's objective per image: mean of the squared activations. acts: [batch, ...] -> [batch]."""
    return acts.flatten(1).pow(2).mean(dim=1)


def caricature_score(acts: torch.Tensor, target: torch.Tensor, power: float) -> torch.Tensor:
    """lucid's caricature objective per image: dot(acts, target) * max(cos(acts, target), 0.1) ** power.

    acts, target: [batch, ...] of the same shape, flattened per image -> [batch].
    """
    acts, target = acts.flatten(1), target.flatten(1)
    dot = (acts * target).sum(dim=1)
    return dot * F.cosine_similarity(acts, target, dim=1).clamp(min=COSINE_FLOOR) ** power


def _ascend(model: nn.Module, layer: nn.Module, score: Callable[[torch.Tensor], torch.Tensor], config: ViewConfig,
            device: torch.device, companion: torch.Tensor | None = None) -> tuple[torch.Tensor, float, list[str]]:
    """Optimise one seeded image to maximise ``score`` of the layer's activations, with robustness transforms.

    ``companion`` [k, 3, size, size] rides in the same batch, after the optimised image, through the same random
    transform each step, so ``score`` can compare the image's activations with the companion's at the same positions.
    ``score`` maps the activations [1 + k, ...] to a scalar. Returns the final image [3, size, size] on the CPU, its
    score without transforms, and the transforms' description.
    """
    target = {"layer": layer}
    extra = [] if companion is None else [companion]
    with frozen(model), seeded(config.seed):
        params, image = fft_decorrelated_image(config.size, 1, device)
        # stride 1: no objective here singles out a centre position that the pad would have to keep aligned.
        transform, described = standard_transforms(config.size / 224, device)
        optimiser = torch.optim.Adam(params, lr=config.lr)
        for _ in range(config.steps):
            optimiser.zero_grad()
            batch = transform(torch.cat([image(), *extra]))  # [1 + k, 3, h, w], h and w vary with the transform
            with fast_forward():
                acts = activations(model, target, channels_last(batch))["layer"]
            (-score(acts)).backward()
            optimiser.step()
        with torch.no_grad():
            final = image()  # [1, 3, size, size]
            achieved = score(activations(model, target, torch.cat([final, *extra]))["layer"])
    return final[0].cpu(), achieved.item(), described


def deepdream(model: nn.Module, layer: nn.Module, config: ViewConfig, device: torch.device | str = "cpu") -> View:
    """An image that maximises the mean squared activation of ``layer``, from a random start seeded by the config."""
    image, achieved, described = _ascend(model, layer, lambda acts: squared_mean(acts).sum(), config,
                                         torch.device(device))
    return View(image, achieved, {**asdict(config), "objective": "deepdream", "formula": "mean(acts ** 2)",
                                  "param": "fft+decorrelate", "transforms": described, "optimizer": "adam"})


def caricature(model: nn.Module, layer: nn.Module, image: torch.Tensor, config: ViewConfig,
               device: torch.device | str = "cpu") -> View:
    """An image whose ``layer`` activations point where those of ``image`` [3, H, W] in [0, 1] do, exaggerated.

    The target activations are recomputed every step on the input under the same random transform as the optimised
    image (lucid puts both in one batch): the transforms change the activation grid's size and shift its content, and
    this way the two maps always have the same shape and their positions cover the same pixels. The target carries no
    gradient. The reported objective compares the final image with the untransformed input.
    """
    device = torch.device(device)
    given = image.to(device, torch.float32)[None]  # [1, 3, H, W]
    if given.shape[-2:] != (config.size, config.size):
        given = F.interpolate(given, size=(config.size, config.size), mode="bilinear", antialias=True)

    def score(acts: torch.Tensor) -> torch.Tensor:  # acts: [2, ...], the optimised image then the input
        return caricature_score(acts[:1], acts[1:].detach(), config.power).sum()

    result, achieved, described = _ascend(model, layer, score, config, device, companion=given.clamp(0, 1))
    return View(result, achieved, {**asdict(config), "objective": "caricature",
                                   "formula": "dot(acts, target) * max(cos(acts, target), 0.1) ** power",
                                   "target": "input's activations under the same transform each step",
                                   "input_size": list(image.shape[-2:]), "param": "fft+decorrelate",
                                   "transforms": described, "optimizer": "adam"})
