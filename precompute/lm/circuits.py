"""Find a language model's circuit for a task and measure how faithful it is (``render.pruning``,
``render.circuit_graph``).

Pairs for pruning and for evaluation come from the task's two disjoint splits (``precompute.lm.tasks.split``), so the
faithfulness numbers are on prompts the pruning never saw. Means for ablation are over pretraining text: the first
windows of the held-out token sample, read as the model read its training stream.

Faithfulness, on held-out pairs, against the full model:
- ``circuit_mean``: the circuit alone, every other node mean-ablated (how it was pruned);
- ``circuit_zero``: the circuit alone, every other node set to zero (does it lean on the means?);
- ``ablated_mean``: the full model with only the circuit mean-ablated (does the model still solve the task without
  it?).
Each reports the task loss, accuracy, and agreement: the fraction of pairs where it picks what the full model picks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from precompute.lm import evaluate
from precompute.lm.evaluate import PairBatch
from precompute.lm.tasks import Task, split
from precompute.lm.tokenizer import token_texts
from render.circuit_graph import Edge, circuit_edges, logit_reads
from render.pruning import Nodes, PruneConfig, Pruned, gated, mean_activations, prune
from store.keys import CIRCUIT_NODE_KINDS, SIZE_TARGETS


@dataclass(frozen=True)
class CircuitConfig:
    prune: PruneConfig = field(default_factory=PruneConfig)
    prune_pairs: int = 256
    eval_pairs: int = 400
    batch: int = 64  # pairs per training step
    mean_windows: int = 64  # pretraining windows (of the model's context) the ablation means are taken over
    examples: int = 6  # held-out pairs shown with both models' choices

    def record(self) -> dict:
        return {**asdict(self.prune), "prune_pairs": self.prune_pairs, "eval_pairs": self.eval_pairs,
                "batch": self.batch, "ablation": "mean"}


@dataclass
class FoundCircuit:
    task: str
    pruned: Pruned
    all_nodes: Nodes  # every node pruning chose from, in the order of ``pruned.order``'s flat indices
    nodes: list[tuple[str, int, float]]  # (layer, channel, tau) of every kept node, in node order
    edges: list[Edge]
    logits: list[dict]
    sizes: list[dict]  # store.keys.CircuitKey.SIZES
    faithfulness: dict
    examples: list[dict]
    config: dict  # CircuitConfig.record() plus what the run measured: mean_tokens, nodes_total, seconds


def node_points(model: nn.Module) -> dict[str, nn.Module]:
    """The hook points pruning masks, in forward order: each block's ``CIRCUIT_NODE_KINDS``."""
    points = model.hook_points()
    return {f"{block}.{kind}": points[f"{block}.{kind}"]
            for block in range(model.config.n_layer) for kind in CIRCUIT_NODE_KINDS}


def pretraining_windows(tokens: np.ndarray, context: int, count: int) -> torch.Tensor:
    """The first ``count`` windows of ``context`` tokens of a token stream: [count, context]."""
    count = min(count, len(tokens) // context)
    return torch.from_numpy(np.asarray(tokens[:count * context], dtype=np.int64)).view(count, context)


def _losses(model: nn.Module, parts: list[tuple[torch.Tensor, PairBatch]], n: int) -> torch.Tensor:
    """[n, 2] candidate logits of every pair, from its length-sorted parts."""
    two = torch.empty(n, 2)
    for rows, part in parts:
        two[rows] = evaluate.candidate_logits(model, part).float().cpu()
    return two


def _scores(two: torch.Tensor, reference: torch.Tensor | None = None) -> dict[str, float]:
    """Task loss and accuracy of [N, 2] (correct, wrong) logits; agreement with ``reference`` logits' choices."""
    scores = {"loss": float(evaluate.task_loss(two)), "accuracy": float((two[:, 0] > two[:, 1]).float().mean())}
    if reference is not None:
        scores["agreement"] = float(((two[:, 0] > two[:, 1]) == (reference[:, 0] > reference[:, 1])).float().mean())
    return scores


def find_circuit(model: nn.Module, tokenizer: Tokenizer, task: Task, pretraining: np.ndarray,
                 config: CircuitConfig = CircuitConfig()) -> FoundCircuit:
    """Prune ``model`` for ``task`` and measure the circuit found. Deterministic for a seed on CPU."""
    started = time.perf_counter()
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    points = node_points(model)
    windows = pretraining_windows(pretraining, model.config.block_size, config.mean_windows)
    means = mean_activations(model, points, windows)
    nodes = Nodes({name: means[name].numel() for name in points})

    prune_batch = evaluate.encode_pairs(tokenizer, task, split(task, "prune", config.prune_pairs, config.prune.seed))
    prune_parts = evaluate.by_length(prune_batch, 256)
    draw = torch.Generator().manual_seed(config.prune.seed)

    def step_loss(_step: int) -> torch.Tensor:
        rows = torch.randperm(len(prune_batch.last), generator=draw)[:config.batch]
        return evaluate.task_loss(evaluate.candidate_logits(model, prune_batch.take(rows)))

    def search_loss() -> float:
        return float(evaluate.task_loss(_losses(model, prune_parts, len(prune_batch.last))))

    pruned = prune(nodes, points, means, step_loss, search_loss, config.prune)
    gates = nodes.top(pruned.order, pruned.k)
    kept = nodes.kept(pruned.order, pruned.k)

    eval_pairs = split(task, "eval", config.eval_pairs, config.prune.seed)
    eval_batch = evaluate.encode_pairs(tokenizer, task, eval_pairs)
    faithfulness, circuit_two, full_two = _faithfulness(model, points, means, gates, eval_batch)
    ids = {text: evaluate.token_id(tokenizer, task.name, text) for text in task.candidates}
    return FoundCircuit(
        task=task.name,
        pruned=pruned,
        all_nodes=nodes,
        nodes=[(name, int(i), float(tau[i])) for (name, indices), tau in zip(kept.items(), nodes.split(pruned.tau).values(),
                                                                              strict=True) for i in indices],
        edges=circuit_edges(model, kept),
        logits=logit_reads(model, kept, ids),
        sizes=_sizes(model, nodes, pruned),
        faithfulness=faithfulness,
        examples=_examples(tokenizer, eval_pairs, eval_batch, full_two, circuit_two, config.examples),
        config={**config.record(), "mean_tokens": int(windows.numel()), "nodes_total": nodes.total,
                "seconds": round(time.perf_counter() - started, 1)},
    )


def size_at(model: nn.Module, nodes: Nodes, pruned: Pruned, target: float) -> tuple[int, int] | None:
    """(nodes, edges) of the smallest evaluated k whose loss is at most ``target``, in the pruning's node order;
    None when no k evaluated reaches it."""
    meeting = [k for k, loss in pruned.curve.items() if loss <= target]
    if not meeting:
        return None
    return min(meeting), len(circuit_edges(model, nodes.kept(pruned.order, min(meeting))))


def _sizes(model: nn.Module, nodes: Nodes, pruned: Pruned) -> list[dict]:
    """Nodes and edges at each of ``SIZE_TARGETS`` the circuit's curve reaches."""
    found = ((target, size_at(model, nodes, pruned, target)) for target in SIZE_TARGETS)
    return [{"target": target, "k": size[0], "edges": size[1]} for target, size in found if size is not None]


def _faithfulness(model: nn.Module, points: Mapping[str, nn.Module], means: Mapping[str, torch.Tensor],
                  gates: Mapping[str, torch.Tensor], batch: PairBatch) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Held-out scores of the full model, the circuit alone (mean- and zero-ablated) and the model without the
    circuit; also returns the circuit's and the full model's [N, 2] logits."""
    parts, n = evaluate.by_length(batch, 256), len(batch.last)
    zeros = {name: torch.zeros_like(mean) for name, mean in means.items()}
    complement = {name: 1 - gate for name, gate in gates.items()}
    with torch.no_grad():
        full = _losses(model, parts, n)
        with gated(points, gates, means):
            alone = _losses(model, parts, n)
        with gated(points, gates, zeros):
            alone_zero = _losses(model, parts, n)
        with gated(points, complement, means):
            without = _losses(model, parts, n)
    return ({"pairs": n, "full": _scores(full), "circuit_mean": _scores(alone, full),
             "circuit_zero": _scores(alone_zero, full), "ablated_mean": _scores(without, full)}, alone, full)


def _examples(tokenizer: Tokenizer, pairs: list, batch: PairBatch, full: torch.Tensor, circuit: torch.Tensor,
              count: int) -> list[dict]:
    """The first ``count`` held-out pairs: the prompt's tokens as the model reads them, and each model's choice with
    the probability it gives the correct candidate (of the two)."""
    def verdict(two: torch.Tensor, pair) -> dict:
        p_correct = float(torch.softmax(two.float(), dim=0)[0])
        return {"choice": pair.correct if two[0] > two[1] else pair.wrong, "p_correct": round(p_correct, 4)}

    out = []
    for i, pair in enumerate(pairs[:count]):
        ids = batch.tokens[i, :int(batch.last[i]) + 1].tolist()
        out.append({"tokens": token_texts(tokenizer, ids), "correct": pair.correct, "wrong": pair.wrong,
                    "full": verdict(full[i], pair), "circuit": verdict(circuit[i], pair)})
    return out
