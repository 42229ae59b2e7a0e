"""Feature visualisations rendered with the network in bfloat16 against float32: how much faster, and whether the
images are as good, in one run.

    nice .venv/bin/python bench/render_precision.py [--model tinyvision] [--layers conv1 conv2 conv3 conv4]
        [--units 8] [--steps 512] [--size 64] [--lr 0.1] [--device cpu]
    nice .venv/bin/python bench/render_precision.py --model inceptionv1 --layers mixed3b mixed4a mixed4d \\
        --steps 64 --size 224 --lr 0.05

For each layer, units 0..N-1 are rendered four times as one batch each: float32 with seed 0 (the reference),
float32 with seed 1 (how much a render varies by chance alone), bfloat16 with seed 0 (its last quarter of steps in
float32, as ``--precision bfloat16`` renders), and bfloat16 throughout. Every final image is
scored by the network in float32 (``render_units`` does that), so the comparison is the objective each image reaches,
not the precision it was optimised in. Prints per layer the seconds of each precision and their ratio, the mean
objective of each render, and the median and worst per-unit ratio to the float32 seed-0 reference (over the units that
respond: a unit a random network leaves near zero gives ratios of rounding noise), for the bfloat16 render and for the
float32 render from another seed; bfloat16 is good enough when its numbers sit where another seed's do. A fourth render,
bfloat16 for every step (``render.featvis.FLOAT32_TAIL_FRACTION`` set to 0 for it), shows what the float32 last
quarter buys.

TinyVision is the trained embedded organism; inceptionv1 has random weights (seed 0) unless ``--weights``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from precompute.adapters import taking_unit_images
from precompute.allocator import keep_freed_memory
from precompute.loaders import load_tinyvision
from precompute.registry import get_model
from render import featvis
from render.featvis import RenderConfig, render_units
from render.lucent_compat import inceptionv1


def network(name: str, weights: str | None) -> torch.nn.Module:
    if name == "tinyvision":
        return load_tinyvision()
    torch.manual_seed(0)
    net = inceptionv1()
    if weights:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return taking_unit_images(net, get_model("inceptionv1").preprocess).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tinyvision", choices=["tinyvision", "inceptionv1"])
    parser.add_argument("--layers", nargs="+", default=["conv1", "conv2", "conv3", "conv4"])
    parser.add_argument("--units", type=int, default=8, help="units 0..N-1 of each layer, one batch")
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--weights", help="inceptionv1 only: a state dict for lucent's InceptionV1")
    args = parser.parse_args()
    device = torch.device(args.device)
    keep_freed_memory()  # as the job does
    net = network(args.model, args.weights).to(device)
    units = list(range(args.units))
    reference = RenderConfig(steps=args.steps, size=args.size, lr=args.lr, seed=0)
    bfloat16, tail = replace(reference, precision="bfloat16"), featvis.FLOAT32_TAIL_FRACTION
    runs = {"float32": (reference, tail), "float32, seed 1": (replace(reference, seed=1), tail),
            "bfloat16": (bfloat16, tail), "bfloat16 throughout": (bfloat16, 0.0)}

    def rendered(layer: torch.nn.Module, config: RenderConfig, tail: float) -> tuple[float, torch.Tensor]:
        featvis.FLOAT32_TAIL_FRACTION = tail
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = render_units(net, layer, units, "channel", config, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started, result.activations  # [units], scored in float32

    print(f"{args.model}: units 0..{args.units - 1} per layer, channel objective, {args.steps} steps, {args.size} px, "
          f"lr {args.lr}, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("objective: the mean over the units of what each final image reaches (scored in float32); per unit, the "
          "median and worst ratio to float32 seed 0's, over the units that respond (reference above a tenth of the "
          "layer's best)")
    print(f"{'layer':8s} {'fp32 s':>7s} {'bf16 s':>7s} {'speed-up':>8s} | {'objective fp32':>14s} {'seed 1':>7s} "
          f"{'bf16':>7s} {'bf16 all':>8s} | ratio: seed 1 (median, worst) | bf16 | bf16 throughout")
    for name in args.layers:
        layer = net.get_submodule(name)
        for precision in ("float32", "bfloat16"):  # warm-ups
            render_units(net, layer, units[:2], "channel", replace(reference, steps=2, precision=precision), device)
        seconds, reached = {}, {}
        for label, run in runs.items():
            seconds[label], reached[label] = rendered(layer, *run)
        base = reached["float32"]
        responding = base > 0.1 * base.max()
        ratios = {label: (reached[label] / base)[responding] for label in list(runs)[1:]}
        print(f"{name:8s} {seconds['float32']:7.1f} {seconds['bfloat16']:7.1f} "
              f"{seconds['float32'] / seconds['bfloat16']:7.2f}x | {base.mean():14.4f} "
              + " ".join(f"{reached[label].mean():7.4f}" for label in list(runs)[1:]) + " | "
              + " | ".join(f"{r.median():6.3f} {r.min():6.3f}" for r in ratios.values()))


if __name__ == "__main__":
    main()
