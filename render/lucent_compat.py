"""The one place torch-lucent 0.1.8 is imported.

Lucent (2021) pins kornia 0.4.1, which warns on import; it reads a module-level ``device`` at call time (CUDA whenever
one exists); and its colour decorrelation always moves to CUDA when present. We take its image parameterisation and
transforms, aim them at the device we were given, and do the colour step here so CPU renders work on GPU machines.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from lucent.optvis import transform as _transform
    from lucent.optvis.param import color as _color
    from lucent.optvis.param import spatial as _spatial
    from lucent.modelzoo.inceptionv1 import helper_layers as _helper_layers
    from lucent.modelzoo.inceptionv1.InceptionV1 import InceptionV1 as _InceptionV1
    from lucent.modelzoo.inceptionv1.InceptionV1 import model_urls as _inceptionv1_urls

INCEPTIONV1_URL = _inceptionv1_urls["inceptionv1"]  # lucent's port of lucid's InceptionV1 weights (inception5h)

Transform = Callable[[torch.Tensor], torch.Tensor]


def inceptionv1() -> torch.nn.Module:
    """Lucent's InceptionV1 (lucid's naming: conv2d0 ... mixed5b), untrained, with plain ReLUs as ``nn.ReLU``
    modules: lucent's own redirect every ReLU's gradient at every step, which we do only at the start of a render
    (``render.relu``), and ``nn.ReLU`` is what that finds."""
    net = _InceptionV1(pretrained=False, redirected_ReLU=False)
    for name, module in list(net.named_children()):
        if isinstance(module, _helper_layers.ReluLayer):
            setattr(net, name, torch.nn.ReLU())
    return net


@contextmanager
def on_device(device: torch.device) -> Iterator[None]:
    saved = _spatial.device, _transform.device
    _spatial.device = _transform.device = device
    try:
        yield
    finally:
        _spatial.device, _transform.device = saved


def fft_decorrelated_image(size: int, batch: int, device: torch.device) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:
    """Lucid's image parameterisation: a scaled Fourier spectrum, colour-decorrelated, squashed to [0, 1].

    Returns the leaf tensors to optimise and a function giving the image batch [batch, 3, size, size].
    """
    with on_device(device):
        params, spectrum_image = _spatial.fft_image([batch, 3, size, size])
    mixing = torch.tensor(_color.color_correlation_normalized.T, device=device)

    def image() -> torch.Tensor:
        decorrelated = (spectrum_image().permute(0, 2, 3, 1) @ mixing).permute(0, 3, 1, 2)
        return torch.sigmoid(decorrelated)

    return params, image


def standard_transforms(scale: float, device: torch.device, stride: int = 1) -> tuple[Transform, list[str]]:
    """Lucid's robustness transforms (pad, jitter, scale, rotate, jitter) with pixel offsets times ``scale``.

    ``scale`` = image size / 224 keeps the recipe's proportions on small images. The pad is rounded up to a multiple
    of the target layer's ``stride`` so the centre position of the padded activation map sits over the same pixels as
    on the unpadded image (otherwise a neuron objective optimises a neighbour of the unit it reports). Returns the
    composed transform and a description of it to record beside every image.
    """
    pad = -(-max(2, round(12 * scale)) // stride) * stride
    jitter1, jitter2 = max(2, round(8 * scale)), max(2, round(4 * scale))
    scales = [1 + (i - 5) / 50.0 for i in range(11)]
    angles = list(range(-10, 11)) + 5 * [0]
    pieces = [
        _transform.pad(pad, mode="constant", constant_value=0.5),
        _transform.jitter(jitter1),
        _transform.random_scale(scales),
        _transform.random_rotate(angles),
        _transform.jitter(jitter2),
    ]

    def apply(x: torch.Tensor) -> torch.Tensor:
        with on_device(device):
            for piece in pieces:
                x = piece(x)
        return x

    described = [f"pad({pad}, 0.5)", f"jitter({jitter1})", "random_scale(0.9..1.1)", "random_rotate(-10..10)",
                 f"jitter({jitter2})"]
    return apply, described


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch and numpy's global RNG (lucent's transforms draw from it) and restore both afterwards."""
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()
    torch.manual_seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
