"""A vision model a user brings: ``torchvision:NAME``, ``timm:NAME`` or ``package.module:factory`` (a function
returning an ``nn.Module``, imported from the current directory), with weights from ``--weights CKPT`` (a state dict,
one wrapped under ``state_dict``/``model``, or a whole pickled module) and an optional model card in TOML:

    slug = "my-resnet"                      # default: NAME or the factory's name
    title = "My ResNet-18"
    description = "Trained on ..."
    [input]                                 # default: 224 px from 256, ImageNet mean/std (timm: its own config)
    size = 224
    resize = 256
    value_range = [0.0, 1.0]
    mean = [0.485, 0.456, 0.406]
    std = [0.229, 0.224, 0.225]
    bgr = false
    layers = ["layer1.0", "layer2.0"]       # or [{name = "block1", module = "layer1.0"}]; default: discovered

Layers are discovered from one forward pass (``candidates``): every module whose output is an image-shaped
[batch, channels, h, w] tensor, as a conv or a block (a module holding others, an element of a Sequential or
ModuleList, that is neither a stage of such blocks nor part of one); the default choice is the blocks, or every
conv where there are none. The spec records the
model's definition on its card (target, layers, the module's printed architecture, parameter count), so its atlas
pages say what it is without the user's code.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from precompute.adapters import read_weights, seeded_init
from precompute.registry import LayerSpec, ModelSpec, Preprocess, WeightsError
from precompute.user_code import import_target
from precompute.weights import sha256_of
from store.keys import CardKey, ModelKind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
CARD_KEYS = {"slug", "title", "description", "input", "layers"}
INPUT_KEYS = {"size", "resize", "value_range", "mean", "std", "bgr"}
ARCHITECTURE_TEXT = 20_000  # characters of the printed module kept on the card


class UserModelError(ValueError):
    pass


@dataclass(frozen=True)
class Candidate:
    module: str  # dotted path
    type: str  # the module's class name
    shape: tuple[int, int, int]  # [channels, h, w] for one input
    # "conv"; "block": a module of modules, an element of a Sequential or ModuleList; "stage": a block ending in a
    # block of its own shape (a ResNet stage); "part": a block inside a block (an inception branch's conv)
    kind: str

    @property
    def units(self) -> int:
        return self.shape[0]


def architecture(target: str) -> nn.Module:
    """The untrained module ``target`` names."""
    family, _, name = target.partition(":")
    try:
        if family == "torchvision":
            from precompute.adapters.torchvision import architecture as build
        elif family == "timm":
            from precompute.adapters.timm import architecture as build
        else:
            factory = import_target(target, "a model factory")
            if not callable(factory):
                raise UserModelError(f"{target!r} is a {type(factory).__name__}, not a function returning a module")
            try:
                net = factory()
            except Exception as exc:  # noqa: BLE001 - the user's code: whatever it raises, say so in one line
                raise UserModelError(f"{target!r}: calling it raised {type(exc).__name__}: {exc}") from None
            if not isinstance(net, nn.Module):
                raise UserModelError(f"{target!r} returned a {type(net).__name__}, not a torch.nn.Module")
            return net
        return build(name)
    except ValueError as exc:
        raise UserModelError(str(exc)) from None


def read_card(path: Path) -> dict[str, Any]:
    try:
        card = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserModelError(f"model card {path}: {exc}") from None
    if unknown := set(card) - CARD_KEYS:
        raise UserModelError(f"model card {path}: unknown key(s) {sorted(unknown)}; known: {sorted(CARD_KEYS)}")
    if unknown := set(card.get("input", {})) - INPUT_KEYS:
        raise UserModelError(f"model card {path}: unknown [input] key(s) {sorted(unknown)}; known: "
                             f"{sorted(INPUT_KEYS)}")
    return card


def default_preprocess(target: str, net: nn.Module) -> Preprocess:
    """timm's own input config for a timm model; 224 px from 256 with ImageNet mean and std otherwise."""
    config = getattr(net, "pretrained_cfg", None) if target.startswith("timm:") else None
    if config:
        size = config["input_size"][-1]
        return Preprocess(size, round(size / config.get("crop_pct", 0.875)), mean=tuple(config["mean"]),
                          std=tuple(config["std"]))
    return Preprocess(224, 256, **IMAGENET)


def preprocess_from(card: dict[str, Any], fallback: Preprocess) -> Preprocess:
    given = card.get("input", {})
    try:
        size = int(given.get("size", fallback.size))
        return Preprocess(size, int(given.get("resize", size if "size" in given else fallback.resize)),
                          tuple(map(float, given.get("value_range", fallback.value_range))),
                          tuple(map(float, given.get("mean", fallback.mean))),
                          tuple(map(float, given.get("std", fallback.std))), bool(given.get("bgr", fallback.bgr)))
    except (TypeError, ValueError) as exc:
        raise UserModelError(f"model card [input]: {exc}") from None


def candidates(net: nn.Module, size: int) -> list[Candidate]:
    """Every module giving an image-shaped output on one [1, 3, size, size] input, in the order they ran. A module
    that runs more than once per forward (a ReLU shared across a block) is left out: it is no single hook point."""
    outputs: dict[str, list[tuple[int, ...]]] = {}
    names = {module: name for name, module in net.named_modules() if name}
    handles = [module.register_forward_hook(
        lambda module, _inputs, output: outputs.setdefault(names[module], []).append(
            tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()))
        for module in names]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, size, size))
    except Exception as exc:  # noqa: BLE001 - the user's module: whatever its forward raises, say so in one line
        raise UserModelError(f"a forward pass of one [1, 3, {size}, {size}] image raised {type(exc).__name__}: "
                             f"{exc}") from None
    finally:
        for handle in handles:
            handle.remove()
    modules = dict(net.named_modules())
    containers = (nn.Sequential, nn.ModuleList)
    found = []
    for name, shapes in outputs.items():
        if len(shapes) != 1 or len(shapes[0]) != 3:
            continue
        module = modules[name]
        parent = modules[name.rpartition(".")[0]] if "." in name else net
        if isinstance(module, nn.Conv2d):
            found.append(Candidate(name, type(module).__name__, shapes[0], "conv"))
        elif list(module.children()) and isinstance(parent, containers) and type(module) not in containers:
            found.append(Candidate(name, type(module).__name__, shapes[0], "block"))
    blocks = [c for c in found if c.kind == "block"]

    def inside(inner: Candidate, outer: Candidate) -> bool:
        return inner.module.startswith(outer.module + ".")

    # a block ending in a block of its own shape is a stage of blocks (a ResNet stage): its blocks are the units
    stages = {outer.module for outer in blocks if any(inside(b, outer) and b.shape == outer.shape for b in blocks)}
    whole = [b for b in blocks if b.module not in stages]
    parts = {b.module for b in whole if any(inside(b, outer) for outer in whole)}  # an inception branch's conv
    return [replace(c, kind="stage" if c.module in stages else "part" if c.module in parts else c.kind)
            if c.kind == "block" else c for c in found]


def default_layers(found: list[Candidate]) -> list[Candidate]:
    return [c for c in found if c.kind == "block"] or [c for c in found if c.kind == "conv"]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "model"


def user_spec(target: str, weights: Path | None, card_path: Path | None, random_weights: bool,
              seed: int = 0) -> ModelSpec:
    """The spec of a user's model, checked: built once (its layers discovered or the card's verified) and its
    weights read, so a bad target, card or checkpoint fails here, before anything is written."""
    card = read_card(card_path) if card_path else {}
    with seeded_init(seed):
        net = architecture(target)
    if weights is None and not random_weights:
        raise UserModelError(f"{target}: give its weights with --weights CKPT (a state dict or a saved module), or "
                             f"ask for an untrained model with --random-weights")
    if weights is not None and not random_weights:
        if not weights.is_file():
            raise UserModelError(f"--weights {weights}: no such file")
        read_weights(net, weights, "state_dict", trusted=True)
    preprocess = preprocess_from(card, default_preprocess(target, net))
    found = {c.module: c for c in candidates(net, preprocess.size)}
    chosen = []
    for entry in card.get("layers") or [{"name": c.module, "module": c.module} for c in default_layers(list(found.values()))]:
        name, module = (entry, entry) if isinstance(entry, str) else (entry.get("name"), entry.get("module"))
        if module not in found:
            raise UserModelError(f"layer {module!r} is not an image-shaped hook point of {target}; "
                                 f"`atlascope layers --model {target}` lists them")
        chosen.append(LayerSpec(str(name or module), module, "conv", found[module].units, found[module].shape))
    if not chosen:
        raise UserModelError(f"{target}: found no conv or block layers; name them in a model card's layers")
    name = card.get("slug") or target.rpartition(":")[2]
    slug = _slug(name) + ("-random" if random_weights else "")
    weights_card = ({"random": True, "seed": seed, "note": "untrained: seeded random weights (--random-weights)"}
                    if random_weights else
                    {"file": weights.name, "sha256": sha256_of(weights), "found": "--weights", "checked": False,
                     "format": "state_dict", "random": False})
    definition = {"target": target, "card_file": str(card_path) if card_path else None,
                  "layers": [{"name": l.name, "module": l.module, "units": l.units, "shape": list(l.shape)}
                             for l in chosen],
                  "architecture": repr(net)[:ARCHITECTURE_TEXT],
                  "parameters": sum(p.numel() for p in net.parameters())}
    return ModelSpec(
        slug=slug, title=card.get("title") or f"{target}{' (untrained)' if random_weights else ''}",
        kind=ModelKind.VISION, description=card.get("description") or f"A model brought by its user: {target}.",
        source=f"{target}; weights: {'seeded random' if random_weights else weights}", layers=tuple(chosen),
        loader="precompute.user_model:load", preprocess=preprocess, weights=weights, random_weights=random_weights,
        seed=seed, card_data={CardKey.WEIGHTS: weights_card, CardKey.INPUT: preprocess.describe(),
                              CardKey.DEFINITION: definition})


def load(spec: ModelSpec) -> nn.Module:
    """The registry loader for a user's model: rebuilt from its target, with its weights or its seed."""
    target = spec.card_data[CardKey.DEFINITION]["target"]
    with seeded_init(spec.seed):
        net = architecture(target)
    if not spec.random_weights:
        if spec.weights is None:
            raise WeightsError(f"{spec.slug}: no weights file")
        read_weights(net, spec.weights, "state_dict", trusted=True)
    return net.eval()
