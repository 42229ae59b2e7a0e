"""Feature visualisations of one InceptionV1 layer: atlascope's batched renderer against torch-lucent 0.1.8's own
``render_vis``, one unit per call as lucent is used, at equal steps, size, lr and transforms, in one run.

    nice .venv/bin/python bench/render_vs_lucent.py [--units 8] [--layer mixed4a] [--steps 64] [--size 224]
        [--lr 0.05] [--batch 32] [--device cpu] [--weights inception5h.pth] [--repeats 1] [--lucent-frozen]
        [--precision float32 bfloat16]

Prints each side's seconds (the best of ``--repeats`` rounds, which rotate the order) and units per hour, the ratios
(atlascope / lucent, one per precision), and a sanity check: the mean activation of each unit's channel on the
final images against the starting images and uniform-noise images, for every side.

How each side is set up (the same network weights for both; random, seeded, unless ``--weights``):
- atlascope: ``render.featvis.render_units`` on ``render.lucent_compat.inceptionv1()`` wrapped by
  ``precompute.adapters.taking_unit_images`` with the registry's preprocessing, as ``atlascope precompute`` runs it:
  all units in batches of ``--batch``, the network cut at the target layer, ReLU gradients redirected for the first
  quarter of the steps, the network's fast forms (``render.fast_forward``), once per ``--precision`` (bfloat16 runs
  the last quarter of the steps in float32). The process keeps freed memory (``precompute.allocator``) as the job's
  does; lucent runs in the same process, so it gets that too.
- lucent: ``lucent.optvis.render.render_vis(model, objectives.channel(layer, unit), ...)`` once per unit on a
  separate, un-hooked instance of the same network (render_vis maps [0, 1] to (-117, 138) itself for a model named
  InceptionV1), with ``param.image(size, fft=True, decorrelate=True)`` (batch 1), Adam at ``--lr``, ``thresholds=
  (steps,)``, and exactly atlascope's transform list (pad, jitter, random scale, random rotate, jitter, with the
  offsets atlascope uses at this size and layer, read back from its render's recorded settings). The model is in eval
  mode with its weights' ``requires_grad`` left on, as lucent's README runs it, unless ``--lucent-frozen``.
  ``fixed_image_size``: render_vis resizes the transformed image to ``fixed_image_size`` when it is truthy, and to
  224 px when it is None and the parameterised image is smaller than 224 px; atlascope feeds the transformed image
  as it is. So lucent gets None at 224 px and above (no resize, its default) and 0 below (no resize either).
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
import warnings
from dataclasses import replace

import numpy as np
import torch

from precompute.adapters import taking_unit_images
from precompute.allocator import keep_freed_memory
from precompute.registry import get_model
from render.featvis import RenderConfig, channel, frozen, render_units
from render.hooks import activations
from render.lucent_compat import fft_decorrelated_image, inceptionv1, on_device, seeded

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from lucent.optvis import objectives as lucent_objectives
    from lucent.optvis import param as lucent_param
    from lucent.optvis import render as lucent_render
    from lucent.optvis import transform as lucent_transform


def lucent_transforms(described: list[str]) -> list:
    """Lucent's standard transform list with the offsets atlascope recorded for its render (``described``)."""
    pad, jitter1, jitter2 = (int(re.match(r"\w+\((\d+)", described[i]).group(1)) for i in (0, 1, 4))
    expected = [f"pad({pad}, 0.5)", f"jitter({jitter1})", "random_scale(0.9..1.1)", "random_rotate(-10..10)",
                f"jitter({jitter2})"]
    assert described == expected, f"atlascope's transforms changed: {described}"
    return [
        lucent_transform.pad(pad, mode="constant", constant_value=0.5),
        lucent_transform.jitter(jitter1),
        lucent_transform.random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
        lucent_transform.random_rotate(list(range(-10, 11)) + 5 * [0]),
        lucent_transform.jitter(jitter2),
    ]


def lucent_render_unit(model, layer: str, unit: int, config: RenderConfig, transforms: list, device) -> tuple:
    """One ``render_vis`` call for ``unit``; returns (start image, final image, render_vis's returned array)."""
    captured = {}

    def param_f():
        params, image_f = lucent_param.image(config.size, fft=True, decorrelate=True)
        with torch.no_grad():
            captured["start"] = image_f().detach()
        captured["image_f"] = image_f
        return params, image_f

    torch.manual_seed(config.seed + unit)
    np.random.seed(config.seed + unit)
    with on_device(device), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kornia 0.4.1's deprecation warnings
        returned = lucent_render.render_vis(
            model, lucent_objectives.channel(layer, unit), param_f=param_f,
            optimizer=lambda params: torch.optim.Adam(params, lr=config.lr), transforms=list(transforms),
            thresholds=(config.steps,), show_image=False, progress=False,
            fixed_image_size=None if config.size >= 224 else 0)
        with torch.no_grad():
            final = captured["image_f"]().detach()
    return captured["start"], final, returned[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=8, help="units 0..N-1 of the layer")
    parser.add_argument("--layer", default="mixed4a")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--lr", type=float, default=0.05, help="lucid's Adam step")
    parser.add_argument("--batch", type=int, default=32, help="atlascope's units per batch (N if smaller)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--weights", help="a state dict for lucent's InceptionV1 (inception5h.pth)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of both sides; the best of each counts")
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                        help="atlascope's network precision(s), each timed as its own side")
    parser.add_argument("--lucent-frozen", action="store_true",
                        help="turn off lucent's model's weight gradients (its README leaves them on)")
    args = parser.parse_args()
    if args.device == "cpu" and torch.cuda.is_available():
        sys.exit("lucent's colour decorrelation always runs on CUDA when there is a GPU: for a CPU comparison on a "
                 "GPU machine, run with CUDA_VISIBLE_DEVICES=")
    device = torch.device(args.device)
    kept = keep_freed_memory()
    units = list(range(args.units))
    batch = min(args.batch, args.units)
    config = RenderConfig(steps=args.steps, size=args.size, lr=args.lr, seed=args.seed)

    torch.manual_seed(0)
    base = inceptionv1()
    if args.weights:
        base.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    ours = inceptionv1()
    ours.load_state_dict(base.state_dict())
    ours = taking_unit_images(ours, get_model("inceptionv1").preprocess).to(device).eval()
    theirs = base.to(device).eval()  # no pre-hook: render_vis does the (-117, 138) mapping itself
    if args.lucent_frozen:
        theirs.requires_grad_(False)
    module = ours.get_submodule(args.layer)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def measure(images: torch.Tensor, slots: list[int]) -> torch.Tensor:
        """The channel objective of each image's unit on the untransformed image, through atlascope's network."""
        with torch.no_grad(), frozen(ours):
            acts = activations(ours, {"layer": module}, images.to(device))["layer"]
            return channel(acts, torch.tensor(slots, device=device)).cpu()

    # Warm-ups, not counted; atlascope's also gives the transform list it uses at this size and layer.
    for precision in args.precision:
        warm = render_units(ours, module, units[:batch], "channel", replace(config, steps=2, precision=precision),
                            device)
    transforms = lucent_transforms(warm.params["transforms"])
    lucent_render_unit(theirs, args.layer, units[0], replace(config, steps=2), transforms, device)

    def run_ours(precision: str) -> tuple[float, list]:
        sync()
        started = time.perf_counter()
        rendered = [render_units(ours, module, units[i:i + batch], "channel", replace(config, precision=precision),
                                 device) for i in range(0, len(units), batch)]
        sync()
        return time.perf_counter() - started, rendered

    def run_lucent() -> tuple[float, list, list]:
        results, per_unit = [], []
        sync()
        started = time.perf_counter()
        for unit in units:
            unit_started = time.perf_counter()
            results.append(lucent_render_unit(theirs, args.layer, unit, config, transforms, device))
            sync()
            per_unit.append(time.perf_counter() - unit_started)
        return time.perf_counter() - started, results, per_unit

    # Rounds rotate which side goes first, so a change in the machine's load hits all; the best round of each counts.
    sides = {**{precision: (lambda p=precision: run_ours(p)) for precision in args.precision}, "lucent": run_lucent}
    order = list(sides)
    seconds = {side: [] for side in sides}
    last = {}
    for r in range(args.repeats):
        for side in order[r % len(order):] + order[:r % len(order)]:
            last[side] = sides[side]()
            seconds[side].append(last[side][0])
    best = {side: min(times) for side, times in seconds.items()}
    results = last["lucent"][1]
    per_unit = last["lucent"][2]

    ours_start = []
    for i in range(0, len(units), batch):  # the start images render_units optimised from (same seed, same draw)
        with seeded(config.seed), torch.no_grad():
            ours_start.append(fft_decorrelated_image(config.size, len(units[i:i + batch]), device)[1]().cpu())
    ours_start = torch.cat(ours_start)
    finals = {precision: torch.cat([r.images for r in last[precision][1]]) for precision in args.precision}
    lucent_start = torch.cat([start.cpu() for start, _, _ in results])
    finals["lucent"] = torch.cat([final.cpu() for _, final, _ in results])
    returned = results[-1][2]

    for precision in args.precision:
        reported = torch.cat([r.activations for r in last[precision][1]])
        assert torch.allclose(measure(finals[precision], units), reported, rtol=1e-3, atol=1e-4)
    assert all(f.shape == (len(units), 3, args.size, args.size) for f in finals.values()), \
        {side: f.shape for side, f in finals.items()}
    assert returned.shape == (1, args.size, args.size, 3), returned.shape  # render_vis's own array, NHWC

    per_hour = lambda seconds: len(units) / seconds * 3600
    print("command: " + shlex.join([sys.executable.replace(sys.prefix, ".venv") if sys.prefix in sys.executable
                                    else sys.executable, *sys.argv]))
    weights = f"weights {args.weights}" if args.weights else "random weights, seed 0"
    print(f"{len(units)} units of inceptionv1 {args.layer} ({weights}), "
          f"channel objective, {args.steps} steps, {args.size} px, Adam lr {args.lr}, on {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; glibc malloc keeping freed memory "
          f"(both sides, as `atlascope precompute` runs): {kept}")
    print(f"transforms (all sides): {', '.join(warm.params['transforms'])}; lucent without resize "
          f"(fixed_image_size={None if args.size >= 224 else 0}); lucent weights "
          f"{'frozen' if args.lucent_frozen else 'with requires_grad (as its README)'}")
    if args.repeats > 1:
        print("rounds, seconds: " + "; ".join(f"{side} {', '.join(f'{t:.1f}' for t in times)}"
                                              for side, times in seconds.items()) + "; best of each below")
    for precision in args.precision:
        tail = " (last quarter of the steps in float32)" if precision != "float32" else ""
        print(f"  atlascope {precision}, batches of {batch}{tail}: {best[precision]:8.1f} s  "
              f"{per_hour(best[precision]):8.1f} units/hour  ({best[precision] / len(units):.2f} s/unit, "
              f"{best[precision] / len(units) / args.steps * 1000:.1f} ms/unit-step)")
    print(f"  lucent render_vis, 1 per call: {best['lucent']:8.1f} s  {per_hour(best['lucent']):8.1f} units/hour  "
          f"({best['lucent'] / len(units):.2f} s/unit, "
          f"{best['lucent'] / len(units) / args.steps * 1000:.1f} ms/unit-step;"
          f" per call {', '.join(f'{t:.1f}' for t in per_unit)} s)")
    for precision in args.precision:
        print(f"  ratio atlascope {precision} / lucent: {best['lucent'] / best[precision]:.2f}x units per hour")
    print(f"  images: all {tuple(finals['lucent'].shape[1:])} per unit, in [0, 1]")
    with seeded(config.seed):
        noise = measure(torch.rand(len(units), 3, args.size, args.size), units)
    print(f"sanity: mean channel activation over the units, start image -> final image (uniform noise images: "
          f"{noise.mean():.3f})")
    starts = {**{precision: ours_start for precision in args.precision}, "lucent": lucent_start}
    for name, final in finals.items():
        a, b = measure(starts[name], units), measure(final, units)
        print(f"  {name:9s}: {a.mean():.3f} -> {b.mean():.3f}; final above start for {(b > a).sum()}/{len(units)} "
              f"units, above uniform noise for {(b > noise).sum()}/{len(units)}; min gain {(b - a).min():.3f}")


if __name__ == "__main__":
    main()
