"""Rendering many units as one batch against one unit at a time, in the same run, on the embedded organism.

    .venv/bin/python bench/featvis_batching.py [--units 16] [--steps 64] [--layer conv3] [--device cpu]

Prints seconds per image for both and their ratio (the batching speed-up); the images are the same recipe.
"""

from __future__ import annotations

import argparse
import time

import torch

from precompute.loaders import load_tinyvision
from render.featvis import RenderConfig, render_units


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--layer", default="conv3")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = load_tinyvision().to(args.device)
    layer, units, config = model.get_submodule(args.layer), list(range(args.units)), RenderConfig(steps=args.steps)
    render_units(model, layer, units[:2], "channel", RenderConfig(steps=2), args.device)  # warm-up

    def timed(fn) -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    one_batch = timed(lambda: render_units(model, layer, units, "channel", config, args.device))
    one_by_one = timed(lambda: [render_units(model, layer, [u], "channel", config, args.device) for u in units])
    print(f"{args.units} units of {args.layer}, {args.steps} steps, 64 px, {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"  one batch of {args.units}: {one_batch / args.units:.3f} s/image ({one_batch:.1f} s)")
    print(f"  one unit at a time: {one_by_one / args.units:.3f} s/image ({one_by_one:.1f} s)")
    print(f"  batching speed-up: {one_by_one / one_batch:.1f}x")


if __name__ == "__main__":
    main()
