"""Cost of the language-model examples pass against a plain forward pass over the same tokens.

    .venv/bin/python bench/lm_examples_pass.py [--model tinylm-sparse] [--random] [--tokens 262144] [--repeats 2]

On the same tokens, in the same batches of 128-token contexts, it times
- forward: the model's plain forward pass, logits and all (what reading the sample costs at the least);
- cut forward: the forward pass up to the last residual stream, where the pass's own forward stops (it needs no
  logits), so the cost of the statistics alone shows too;
- pass: ``render.contexts.one_pass`` over every layer of the model, as the ``contexts`` stage runs it: the forward
  pass with hooks, top contexts, random contexts, density, mean, extremes, histograms and every kept context's window
  of values (turning them into rows and writing them is the stage's, and not timed here);
and prints them and the pass's ratio to each (the aim: at most 1.3 against the plain forward). With ``--repeats`` it alternates the two and keeps each one's
fastest, as the machine is shared. ``--random`` runs a random model of the organism's shape (weights 1/16 nonzero)
instead of the committed weights, for before they exist.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from precompute.lm import sparsity
from precompute.lm.model import SparseGPT
from precompute.organisms.train_tinylm import architecture
from precompute.registry import get_model, language_layers
from precompute.stages.contexts import CONTEXT, ContextsConfig
from render.contexts import one_pass, unit_offsets
from render.hooks import activations


def model_and_layers(slug: str, random: bool) -> tuple[SparseGPT, list]:
    if not random:
        spec = get_model(slug)
        return spec.load(), list(spec.layers)
    torch.manual_seed(0)
    config = architecture()
    model = SparseGPT(config).eval()
    sparsity.sparsify_(model.sparse_matrices(), 1 / 16)
    return model, list(language_layers(config.n_layer, config.d_model, config.d_mlp, config.d_attn))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tinylm-sparse")
    parser.add_argument("--random", action="store_true", help="a random model of the organism's shape")
    parser.add_argument("--tokens", type=int, default=None, help="held-out tokens (default: the whole sample)")
    parser.add_argument("--batch", type=int, default=ContextsConfig().batch, help="contexts per forward pass")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    from precompute.lm.corpus import load_heldout

    model, layers = model_and_layers(args.model, args.random)
    held = load_heldout()
    n = min(args.tokens or len(held.tokens), len(held.tokens)) // CONTEXT * CONTEXT
    tokens = torch.from_numpy(held.tokens[:n].astype(np.int64))
    documents = torch.tensor([start for _, start in held.documents])
    hooks = model.hook_points()
    chosen = {layer.name: hooks[layer.module] for layer in layers}
    offsets = {layer.name: unit_offsets(layer.units, position) for position, layer in enumerate(layers)}
    batches = tokens.view(-1, CONTEXT).split(args.batch)

    def forward() -> None:
        with torch.no_grad():
            for batch in batches:
                model(batch)

    last = {layers[-1].name: hooks[layers[-1].module]}

    def cut_forward() -> None:
        with torch.no_grad():
            for batch in batches:
                activations(model, last, batch)

    def examples_pass() -> None:
        one_pass(model, chosen, tokens, CONTEXT, args.batch, documents, offsets, pool_seed=0)

    best = {"forward": float("inf"), "cut forward": float("inf"), "pass": float("inf")}
    for _ in range(args.repeats):
        for name, run in (("forward", forward), ("cut forward", cut_forward), ("pass", examples_pass)):
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    units = sum(layer.units for layer in layers)
    which = f"random {args.model}-shaped model" if args.random else args.model
    print(f"{which}: {n:,} tokens in {CONTEXT}-token contexts, {args.batch} at a time, {len(layers)} layers, "
          f"{units:,} units, {torch.get_num_threads()} threads")
    print(f"forward {best['forward']:.1f} s, cut forward {best['cut forward']:.1f} s, examples pass "
          f"{best['pass']:.1f} s (best of {args.repeats} each)")
    print(f"examples pass / forward: {best['pass'] / best['forward']:.2f}x; "
          f"/ cut forward: {best['pass'] / best['cut forward']:.2f}x")


if __name__ == "__main__":
    main()
