"""Cost of the vision dataset-examples pass against a plain forward pass over the same images.

    .venv/bin/python bench/examples_pass.py [--model tinyvision | --arch resnet18] [--images 4096] [--repeats 2]

On the same images (held in memory, as the built-in datasets are; decoding files costs the same with or without the
pass), in the same batches, it times
- forward: the model's plain forward pass, to its output, batches turned into the model's input as the pass does;
- cut forward: the forward pass stopped after the deepest chosen layer, where the examples pass stops too;
- pass: ``precompute.stages.examples.examples_pass`` over every chosen layer, as the ``examples`` stage runs it
  (hooks, spatial max per unit, running top 32 by ``topk``, the sampled values for quartiles and middle examples);
- finish: ranking (quartiles, middle examples) and the receptive fields, once per run, whatever the dataset size;
and prints the pass's ratio to each forward (the aim: at most about 1.3 against the plain forward). With ``--repeats``
it alternates them and keeps each one's fastest, as the machine is shared.

``--model`` takes a registry model with its built-in dataset (the embedded organism: committed weights, all layers).
``--arch`` takes a torchvision architecture with random weights at 224 px on random images, every conv's batchnorm
(or ReLU) as a layer: resnet18 has 4,800 units (pretrained weights cannot be fetched here; speed does not need them).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from precompute.datasets.images import ImageDataset, in_memory, to_tensor
from precompute.registry import Preprocess, get_model
from precompute.stages.examples import ExamplesConfig, examples_pass
from render.hooks import activations
from render.receptive_field import receptive_field


def registry_model(slug: str, images: int) -> tuple[nn.Module, dict[str, nn.Module], dict[str, int], ImageDataset,
                                                    Preprocess]:
    spec = get_model(slug)
    net = spec.load()
    dataset = spec.default_examples()
    if images < len(dataset):
        chosen, _ = dataset.read(list(range(images)))
        dataset = in_memory(dataset.name, "bench", chosen)
    return (net, {layer.name: net.get_submodule(layer.module) for layer in spec.layers},
            {layer.name: layer.units for layer in spec.layers}, dataset, spec.preprocess)


def torchvision_model(arch: str, images: int) -> tuple[nn.Module, dict[str, nn.Module], dict[str, int], ImageDataset,
                                                       Preprocess]:
    """Random weights. The layers: every batchnorm where the architecture has them (ResNets call one ReLU module
    twice per block, so its ReLUs are not one hook point each), else every ReLU that follows a conv (AlexNet, VGG)."""
    import torchvision

    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None).eval()
    norms = {name: module for name, module in net.named_modules() if isinstance(module, nn.BatchNorm2d)}
    modules, units, channels = {}, {}, None
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            channels = module.out_channels
        elif name in norms or (not norms and isinstance(module, nn.ReLU) and channels is not None):
            modules[name], units[name] = module, channels
            channels = None
    pixels = np.random.default_rng(0).integers(0, 256, (images, 224, 224, 3), dtype=np.uint8)
    return net, modules, units, in_memory("random", "bench", pixels), Preprocess(224, 256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", default="tinyvision", help="a registry model with its built-in dataset")
    which.add_argument("--arch", help="a torchvision architecture, random weights, random 224 px images")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=ExamplesConfig().batch)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    build = (lambda: torchvision_model(args.arch, args.images)) if args.arch else \
        (lambda: registry_model(args.model, args.images))
    net, modules, units, dataset, preprocess = build()
    config = ExamplesConfig(batch=args.batch)
    device = torch.device("cpu")
    deepest = {name: modules[name] for name in list(modules)[-1:]}

    def inputs():
        for images, _ in dataset.batches(args.batch):
            yield to_tensor(images)  # [batch, 3, size, size], as the pass makes them

    def forward() -> None:
        with torch.no_grad():
            for x in inputs():
                net(x)

    def cut_forward() -> None:
        with torch.no_grad():
            for x in inputs():
                activations(net, deepest, x)

    collectors = []

    def examples() -> None:
        collectors.append(examples_pass(net, modules, units, dataset, config, device))

    best = {"forward": float("inf"), "cut forward": float("inf"), "pass": float("inf")}
    for _ in range(args.repeats):
        for name, run in (("forward", forward), ("cut forward", cut_forward), ("pass", examples)):
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    start = time.perf_counter()
    for name in modules:
        collectors[-1].ranked(name)
        receptive_field(net, modules[name], (3, preprocess.size, preprocess.size), device)
    finish = time.perf_counter() - start

    label = f"{args.arch} (random weights)" if args.arch else args.model
    print(f"{label}: {len(dataset):,} images at {preprocess.size} px, {args.batch} at a time, {len(modules)} layers, "
          f"{sum(units.values()):,} units, {torch.get_num_threads()} threads")
    print(f"forward {best['forward']:.1f} s, cut forward "
          f"{best['cut forward']:.1f} s, examples pass {best['pass']:.1f} s (best of {args.repeats} each); "
          f"finish (ranking, receptive fields) {finish:.1f} s once")
    print(f"examples pass / forward: {best['pass'] / best['forward']:.2f}x; "
          f"/ cut forward: {best['pass'] / best['cut forward']:.2f}x")


if __name__ == "__main__":
    main()
