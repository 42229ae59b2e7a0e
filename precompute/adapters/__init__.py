"""One adapter per model family (lucent, torchvision, timm, the Caffe-era nets, a user's own module): each builds the
``nn.Module`` whose submodules the registry's layer names point at, and fills it with weights from a file that
``precompute.weights`` has found and checked (or leaves it seeded-random when asked to)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from precompute.registry import ModelSpec, Preprocess, WeightsError


def taking_unit_images(net: nn.Module, preprocess: Preprocess | None) -> nn.Module:
    """Make ``net`` take images as every stage renders them ([batch, 3, h, w] RGB in [0, 1]) by mapping them to the
    model's own input (channel order, value range, mean and std) in a forward pre-hook. The module keeps its names,
    so layer paths stay valid, and the map is affine, so gradients and expanded weights pass through it exactly."""
    if preprocess is None or preprocess.is_identity:
        return net
    shift, scale = preprocess.affine()  # per channel, in the model's channel order: x_model = x * scale + shift
    shift = torch.tensor(shift).view(1, 3, 1, 1)
    scale = torch.tensor(scale).view(1, 3, 1, 1)

    def to_model(_module, args):
        x = args[0].flip(1) if preprocess.bgr else args[0]
        return (x * scale.to(x) + shift.to(x), *args[1:])

    net.register_forward_pre_hook(to_model)
    return net


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Within the block, a model built gets the same random weights for the same seed; the global RNG is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def state_dict_from(loaded, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: a state dict, one under ``state_dict`` or ``model`` (training scripts'
    habit), or a whole module's; DataParallel's ``module.`` prefixes dropped."""
    if isinstance(loaded, nn.Module):
        loaded = loaded.state_dict()
    if isinstance(loaded, dict):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), (dict, nn.Module)):
                return state_dict_from(loaded[key], path)
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise WeightsError(f"{path} holds no state dict (found {type(loaded).__name__})")
    return {key.removeprefix("module."): value for key, value in loaded.items()}


def load_state_dict(net: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``net.load_state_dict`` with an error that names the first few mismatched keys and shapes."""
    expected = net.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [f"{key} {tuple(state[key].shape)} (needs {tuple(value.shape)})" for key, value in expected.items()
              if key in state and state[key].shape != value.shape]
    if missing or unexpected or shapes:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "") if keys else "none"

        raise WeightsError(f"{path} does not fit {type(net).__name__}: missing keys: {few(missing)}; unexpected "
                           f"keys: {few(unexpected)}; wrong shapes: {few(shapes)}")
    net.load_state_dict(state)


def read_weights(net: nn.Module, path: Path, file_format: str, module_for: Callable[[str], str] | None = None,
                 trusted: bool = False) -> None:
    """Fill ``net`` from ``path`` in its format: a torch state dict (``trusted``: a whole pickled module is allowed,
    for a user's own checkpoint), safetensors, or a Caffe model (``module_for`` maps Caffe layer names to modules)."""
    if file_format == "caffemodel":
        from precompute.adapters.caffemodel import CaffeModelError, load_caffemodel

        try:
            load_caffemodel(net, path, module_for)
        except CaffeModelError as exc:
            raise WeightsError(str(exc)) from None
        return
    if file_format == "safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=not trusted)
        except Exception as exc:  # torch raises pickle, zip and runtime errors for files that are not checkpoints
            raise WeightsError(f"{path} is not a torch checkpoint torch.load can read ({exc.__class__.__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    load_state_dict(net, state_dict_from(state, path), path)


def built(spec: ModelSpec, make: Callable[[], nn.Module], module_for: Callable[[str], str] | None = None) -> nn.Module:
    """``make()``'s model in eval mode: seeded random weights if the spec asks for them, else the checked file
    ``spec.weights`` (found by ``precompute.weights.find``) read in its published format."""
    with seeded_init(spec.seed):
        net = make()
    if not spec.random_weights:
        if spec.weights is None or spec.weights_source is None:
            raise WeightsError(f"{spec.slug}: no weights file found for it (precompute.weights.find)")
        read_weights(net, spec.weights, spec.weights_source.format, module_for)
    return net.eval()
