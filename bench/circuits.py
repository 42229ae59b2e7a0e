"""Task circuits of the sparse and the dense organism, as the ``circuits`` stage finds them, with their evidence; the
dense/sparse edge ratio; and what a batched sweep costs against one setting alone.

    .venv/bin/python bench/circuits.py [--tasks single_double_quote,...] [--models tinylm-sparse] [--steps 300] \
        [--write-settings precompute/organisms/tinylm-circuits.json]

For every task, each organism (``tinylm-sparse``, ``tinylm-dense``: matched held-out loss, committed weights loaded
by ``precompute.organisms.tinylm.load``) is pruned by ``precompute.lm.circuits.find_circuit`` with the default sweep
(``DEFAULT_SWEEP``, 8 settings trained as one batch, seed 0), means over the whole held-out sample taken once per
model. Per task and model it prints: the full model's held-out loss and accuracy; the chosen setting (k_coef, lr);
nodes, edges and calibrated loss on the pruning pairs at the target (or "not found" with the best loss and its k);
the held-out loss/accuracy of the circuit alone (mean- and zero-ablated), of the model with the circuit ablated and
of everything ablated (k = 0); the null (the same pruning on a weight-shuffled copy); and the seconds it took. Then
the geometric mean over the tasks both organisms met of dense edges / sparse edges (the paper reports about 16x).

The sweep-cost line times, on the first task and the sparse organism, ``render.pruning.prune`` (training and k
search) for the 8 settings as one batch against the first setting alone, at the same steps, and gives the ratio (8
separate runs would be about 8x).

``--write-settings FILE`` records each (organism, task)'s chosen setting (the closest one when none met the target) in
FILE, ``{slug: {task: {"k_coef", "lr"}}}`` with the bench's notes beside them ("steps", "met", "k", "edges", "loss"),
replacing the entries of the organisms and tasks it ran and keeping the others; a job given them
(``precompute.lm.circuits.recorded``) prunes each of those tasks once instead of sweeping.

Times are wall-clock on the machine it runs on; ``--threads`` sets torch's (default 2); the last line gives the whole
run's. Not yet timed on an undisturbed 2-core machine (this one was saturated by organism training when the bench was
written): each model-task costs a sweep of 8 settings x ``--steps`` steps, a null of 1 x ``--steps`` and the evidence,
so ``--steps 100 --tasks single_double_quote`` is the quick look and the default the recorded run.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from precompute.lm import evaluate
from precompute.lm.circuits import (DEFAULT_SWEEP, CircuitConfig, FoundCircuit, Prepared, find_circuit, objective,
                                    prepare, shuffled, signs_of)
from precompute.lm.corpus import load_heldout
from precompute.lm.tasks import TASKS, contrastive_split
from precompute.lm.tokenizer import load_tokenizer
from precompute.organisms import tinylm
from render.pruning import PruneConfig, prune

MODELS = ("tinylm-sparse", "tinylm-dense")


def scores(found: FoundCircuit) -> str:
    f = found.faithfulness
    return " ".join(f"{key} {f[key]['loss']:.3f}/{100 * f[key]['accuracy']:.0f}%" for key in
                    ("circuit_mean", "circuit_zero", "ablated_mean", "all_ablated") if key in f)


def describe(found: FoundCircuit) -> str:
    p, f, null = found.pruned, found.faithfulness, found.null or {}
    head = (f"full {f['full']['loss']:.3f}/{100 * f['full']['accuracy']:.0f}%  k_coef {p.setting.k_coef:g} "
            f"lr {p.setting.lr:g}  ")
    size = (f"nodes {found.n_nodes:5d} edges {len(found.edges):7d} loss {found.loss:.3f}" if found.met else
            f"not found: best loss {p.best_loss:.3f} at k {p.best_k}")
    beats = "  BEATS FULL" if f.get("beats_full") else ""
    null_said = (f"null {'met' if null.get('met') else 'not met'} loss {null.get('loss', float('nan')):.3f}"
                 + (f" k {null['k']} edges {null['edges']}" if null.get("met") else "")
                 + (f" (shuffled full {null['full']['loss']:.3f})" if null.get("full") else ""))
    return f"{head}{size}  held-out {scores(found)}{beats}  {null_said}  {found.config['seconds']:.0f}s"


def sweep_cost(prepared: Prepared, tokenizer, task, config: CircuitConfig) -> tuple[float, float]:
    """Seconds of ``prune`` (training and k search) for the default sweep as one batch, and for its first setting
    alone, at the same steps, on the same pairs and means."""
    model = prepared.model
    flat = [pair for both in contrastive_split(task, "prune", config.prune_pairs, 0) for pair in both]
    batch = evaluate.encode_pairs(tokenizer, task, flat)
    seconds = []
    for settings in (DEFAULT_SWEEP, DEFAULT_SWEEP[:1]):
        task_objective = objective(model, batch, signs_of(task, flat), config.batch, 0)
        started = time.perf_counter()
        prune(prepared.nodes, prepared.points, prepared.means, task_objective, settings, config.prune)
        seconds.append(time.perf_counter() - started)
    return seconds[0], seconds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--models", default=",".join(MODELS), help="organisms to prune (the ratio needs both)")
    parser.add_argument("--steps", type=int, default=PruneConfig.steps)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write-settings", type=Path, help="record each (organism, task)'s chosen setting in this "
                                                             "JSON file (precompute/organisms/tinylm-circuits.json)")
    parser.add_argument("--no-cost", action="store_true", help="skip the sweep-cost measurement")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    tokenizer, pretraining = load_tokenizer(), load_heldout().tokens
    config = CircuitConfig(prune=PruneConfig(steps=args.steps))
    target = config.prune.target_loss
    models = {slug: tinylm.load(slug) for slug in args.models.split(",")}
    print(f"target task loss {target}; {args.steps} steps; sweep of {len(config.sweep)} (k_coef x lr): "
          + ", ".join(f"{s.k_coef:g}/{s.lr:g}" for s in config.sweep) + f"; {config.batch} contrastive pairs a step, "
          f"{config.prune_pairs} pruning pairs, {config.eval_pairs} held-out pairs; {args.threads} threads")
    prepared, nulls = {}, {}
    for slug, model in models.items():
        preparing = time.perf_counter()
        prepared[slug] = prepare(model, pretraining, config.mean_windows)
        nulls[slug] = prepare(shuffled(model, config.prune.seed), pretraining, config.mean_windows)
        print(f"{slug}: means over {prepared[slug].mean_tokens:,} tokens, for it and its weight-shuffled null: "
              f"{time.perf_counter() - preparing:.0f}s")
    ratios, chosen = [], {slug: {} for slug in models}
    for name in args.tasks.split(","):
        found = {}
        for slug, model in models.items():
            found[slug] = f = find_circuit(model, tokenizer, TASKS[name], pretraining, config,
                                           prepared=prepared[slug], null=nulls[slug])
            print(f"{name:26s} {slug:14s} {describe(f)}", flush=True)
            p = f.pruned
            chosen[slug][name] = {"k_coef": p.setting.k_coef, "lr": p.setting.lr, "steps": args.steps, "met": f.met,
                                  "k": f.n_nodes if f.met else None, "edges": len(f.edges) if f.met else None,
                                  "loss": round(f.loss, 5)}
        if set(found) != set(MODELS):
            continue
        sparse, dense = found["tinylm-sparse"], found["tinylm-dense"]
        if sparse.met and dense.met:
            ratio = len(dense.edges) / max(1, len(sparse.edges))
            ratios.append(ratio)
            print(f"{name:26s} dense/sparse at {target}: edges {ratio:.1f}x, nodes "
                  f"{dense.n_nodes / max(1, sparse.n_nodes):.1f}x")
        else:
            print(f"{name:26s} no ratio at {target}: " + ", ".join(slug for slug in MODELS if not found[slug].met)
                  + " found no circuit")
    if ratios:
        print(f"geometric mean of dense/sparse edges over {len(ratios)} task(s) both met: "
              f"{math.exp(sum(map(math.log, ratios)) / len(ratios)):.1f}x (paper: about 16x)")
    else:
        print("geometric mean of dense/sparse edges: no task met by both")
    if args.write_settings:
        recorded = json.loads(args.write_settings.read_text()) if args.write_settings.exists() else {}
        for slug, tasks in chosen.items():
            recorded[slug] = {**recorded.get(slug, {}), **tasks}
        args.write_settings.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
        print(f"chosen settings recorded in {args.write_settings}")
    if not args.no_cost and "tinylm-sparse" in prepared:
        first = TASKS[args.tasks.split(",")[0]]
        batched, alone = sweep_cost(prepared["tinylm-sparse"], tokenizer, first, config)
        print(f"sweep cost ({first.name}, tinylm-sparse, {args.steps} steps, training and k search): "
              f"{len(DEFAULT_SWEEP)} settings as one batch {batched:.1f}s, one setting alone {alone:.1f}s: "
              f"{batched / alone:.2f}x one run ({len(DEFAULT_SWEEP)} separate runs: about {len(DEFAULT_SWEEP)}x)")
    print(f"bench: {time.perf_counter() - started:.0f}s in all")


if __name__ == "__main__":
    main()
