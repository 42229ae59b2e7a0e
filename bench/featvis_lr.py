"""How hard feature visualisations drive their units, by learning rate and steps, on the embedded organism.

    .venv/bin/python bench/featvis_lr.py [--units 8] [--steps 48,128] [--lr 0.05,0.1,0.2]

Per layer: the smallest and median z-score of the unit's channel activation on its image against the held-out
dataset sample ((activation - mean) / std), and how many images beat every dataset image. Lucid's lr 0.05 is tuned
for 224 px images; this is the evidence for atlascope's default.
"""

from __future__ import annotations

import argparse

from precompute.loaders import load_tinyvision, tinyvision_sample
from render.featvis import RenderConfig, render_units
from render.stats import channel_statistics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--steps", default="48,128")
    parser.add_argument("--lr", default="0.05,0.1,0.2")
    parser.add_argument("--layers", default="conv1,conv2,conv4")
    args = parser.parse_args()
    model, names, units = load_tinyvision(), args.layers.split(","), list(range(args.units))
    stats = channel_statistics(model, {n: model.get_submodule(n) for n in names}, tinyvision_sample())
    for steps in map(int, args.steps.split(",")):
        for lr in map(float, args.lr.split(",")):
            cells = []
            for name in names:
                rendered = render_units(model, model.get_submodule(name), units, "channel",
                                        RenderConfig(steps=steps, lr=lr))
                s = stats[name]
                z = (rendered.activations - s["mean"][units]) / s["std"][units]
                beats = (rendered.activations > s["max"][units]).sum().item()
                cells.append(f"{name} z min {z.min():.1f} median {z.median():.1f} >max {beats}/{len(units)}")
            print(f"steps {steps:4d} lr {lr:<5}  " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
