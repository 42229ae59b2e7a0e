"""Find a language model's circuit for a task and measure how far to trust it (``render.pruning``,
``render.circuit_graph``).

Pruning trains on *contrastive pairs* from the task's pruning split (``precompute.lm.tasks.contrastive_split``: two
prompts from one seed, one per answer, both in every step) and reads the loss at each k on all of them. Evidence is
measured on the evaluation split (``split``, the pairs the model's card scores), which pruning never saw. Means for
ablation are over the model's whole held-out pretraining sample, read as the model read its training stream, computed
once per model (``prepare``) and shared by every task and setting.

A sweep of settings (``CircuitConfig.sweep``: k_coef x learning rate) trains at once; the circuit is the smallest
(by nodes, then edges) of the settings whose calibrated loss on the pruning pairs meets the target. When none does,
nothing is a circuit: the result says so with the best loss reached and its k, and carries no nodes and no edges.

The evidence, on held-out pairs:
- ``full``: the model itself;
- ``circuit_mean``: the circuit alone, every other node mean-ablated (how it was pruned);
- ``circuit_zero``: the circuit alone, every other node set to zero (does it lean on the means?);
- ``ablated_mean``: the full model with only the circuit mean-ablated (does the model still solve the task without
  it?);
- ``all_ablated``: every node mean-ablated (k = 0): what the embeddings, the bigram table and the means do alone,
  the baseline any circuit must beat;
- ``beats_full``: whether the circuit alone has a lower loss than the full model by more than the 95% interval of
  their paired per-pair difference (a circuit better at the task than its model is not what the model does);
- a *null*: the chosen setting's pruning repeated on a copy of the model whose weights are shuffled within each
  matrix, where there is no circuit to find.
The rows of the circuit alone (``circuit_mean``, ``circuit_zero``, ``all_ablated``) are read as pruning reads every
k: after a scale and shift of the candidates' logit difference fitted on the *pruning* pairs in the same condition
(``render.pruning.calibrate``), never on the held-out ones; ``full`` and ``ablated_mean`` are the model's own logits.
Each row reports task loss, accuracy and agreement (how often it picks what the full model picks).

A found circuit also carries what its page shows at other k's and on held-out pairs (``precompute.lm.circuit_views``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from precompute.lm import evaluate
from precompute.lm.circuit_views import CircuitViews, measure_views
from precompute.lm.evaluate import PairBatch
from precompute.lm.task_check import candidate_ids
from precompute.lm.tasks import Pair, Task, contrastive_split, split
from precompute.lm.tokenizer import token_texts
from render.circuit_graph import Edge, circuit_edges, logit_reads
from render.pruning import (Calibration, Nodes, Objective, PruneConfig, Pruned, Search, Setting, calibrate,
                            extend_curve, gated, mean_activations, prune, task_losses)
from store.keys import CIRCUIT_NODE_KINDS, SIZE_TARGETS

Report = Callable[[str], None]

# k_coef x lr. The penalty spans the sizes that matter here (at 1e-4 a kept node costs 0.0001 nats, at 3e-3 a circuit
# of 50 nodes costs 0.15, the whole target); the two rates are the replication's 1e-2 and a faster one for short runs.
DEFAULT_SWEEP = tuple(Setting(k_coef, lr) for k_coef in (1e-4, 3e-4, 1e-3, 3e-3) for lr in (1e-2, 3e-2))
NULL_METHOD = "weight-shuffled"
SEARCH_ROWS = 512  # prompts (all copies together) per forward pass while reading the loss at k
# Pretraining tokens per forward pass while taking the means (64 windows of a TinyLM's 128 tokens): the pass holds
# every node's activation at all of them at once, so windows of a longer context go fewer at a time
MEAN_BATCH_TOKENS = 8192
# The embedded organisms' settings as a sweep chose them, per model and task (``recorded_settings``)
RECORDED = Path(__file__).resolve().parents[1] / "organisms" / "tinylm-circuits.json"


@dataclass(frozen=True)
class CircuitConfig:
    prune: PruneConfig = field(default_factory=PruneConfig)
    sweep: tuple[Setting, ...] = DEFAULT_SWEEP  # the settings tried for every task without its own
    # Settings chosen per task ((task name, (Setting, ...)), ...): they replace the sweep for that task; one setting
    # (a sweep's recorded choice, ``recorded``) prunes once
    chosen: tuple[tuple[str, tuple[Setting, ...]], ...] = ()
    prune_pairs: int = 64  # contrastive pairs (two prompts each) the masks train on and each k is read on
    eval_pairs: int = 400  # held-out prompts the evidence is measured on (the model card's)
    batch: int = 4  # contrastive pairs per training step
    mean_windows: int | None = None  # pretraining windows the means are over; None: the whole held-out sample
    examples: int = 6  # held-out pairs shown with both models' choices
    null: bool = True  # prune a weight-shuffled copy of the model with the chosen setting too

    def settings(self, task: str) -> tuple[Setting, ...]:
        """The settings tried for ``task``: its chosen ones, else the sweep; ``prune.k_coef`` (``--k-coef``) replaces
        every setting's penalty (the sweep then varies the learning rate alone)."""
        settings = dict(self.chosen).get(task, self.sweep)
        if self.prune.k_coef is not None:
            settings = tuple(dict.fromkeys(Setting(self.prune.k_coef, s.lr) for s in settings))
        return settings

    def record(self) -> dict:
        return {**self.prune.record(), "prune_pairs": self.prune_pairs, "eval_pairs": self.eval_pairs, "batch": self.batch,
                "ablation": "mean", "mean_windows": self.mean_windows, "null": NULL_METHOD if self.null else None}


def recorded_settings(slug: str, path: Path | str = RECORDED) -> tuple[tuple[str, tuple[Setting, ...]], ...]:
    """A model's recorded settings, as ``CircuitConfig.chosen``: one setting per task, read from ``path``, a JSON
    object ``{slug: {task: {"k_coef", "lr", ...}}}`` (``bench/circuits.py --write-settings`` writes it from a sweep;
    other keys in a task's entry are the bench's notes). A missing file, or a model or task it does not name, has
    none, so those tasks are swept (``CircuitConfig.sweep``)."""
    path = Path(path)
    tasks = json.loads(path.read_text()).get(slug, {}) if path.exists() else {}
    return tuple((task, (Setting(float(s["k_coef"]), float(s["lr"])),)) for task, s in sorted(tasks.items()))


def recorded(slug: str, config: CircuitConfig | None = None, path: Path | str = RECORDED) -> CircuitConfig:
    """``config`` (default: the default one) with ``slug``'s recorded settings (``recorded_settings``): a job given it
    prunes each recorded task once, with its setting, and sweeps the others."""
    return dataclasses.replace(config or CircuitConfig(), chosen=recorded_settings(slug, path))


@dataclass
class Prepared:
    """A model ready to prune: its node points, its nodes and their ablation means over pretraining text."""

    model: nn.Module
    points: dict[str, nn.Module]
    nodes: Nodes
    means: dict[str, torch.Tensor]
    mean_tokens: int


@dataclass
class FoundCircuit:
    """What the ``circuits`` stage stores for a task (``store.keys.CircuitKey``)."""

    task: str
    met: bool
    loss: float  # calibrated task loss on the pruning pairs at the circuit's k; the best reached when not met
    pruned: Pruned  # the chosen setting's (when not met: the setting that came closest)
    all_nodes: Nodes
    nodes: list[tuple[str, int, float]]  # (layer, channel, tau) of every kept node, in node order; [] when not met
    edges: list[Edge]  # [] when not met
    logits: list[dict]
    sizes: list[dict]  # store.keys.CircuitKey.SIZES
    target: dict  # CircuitKey.TARGET
    faithfulness: dict  # CircuitKey.FAITHFULNESS
    null: dict | None  # CircuitKey.NULL
    sweep: dict  # CircuitKey.SWEEP
    calibration: dict  # CircuitKey.CALIBRATION
    examples: list[dict]
    config: dict  # CircuitKey.CONFIG
    views: CircuitViews | None = None  # what the page shows besides the circuit at its k; None when not met

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)


def node_points(model: nn.Module) -> dict[str, nn.Module]:
    """The hook points pruning masks, in forward order: each block's ``CIRCUIT_NODE_KINDS``."""
    points = model.hook_points()
    return {f"{block}.{kind}": points[f"{block}.{kind}"]
            for block in range(model.config.n_layer) for kind in CIRCUIT_NODE_KINDS}


def pretraining_windows(tokens: np.ndarray, context: int, count: int | None = None) -> torch.Tensor:
    """The first ``count`` windows (None: all) of ``context`` tokens of a token stream: [count, context]."""
    count = len(tokens) // context if count is None else min(count, len(tokens) // context)
    return torch.from_numpy(np.asarray(tokens[:count * context], dtype=np.int64)).view(count, context)


def prepare(model: nn.Module, pretraining: np.ndarray, windows: int | None = None,
            report: Report | None = None) -> Prepared:
    """Freeze ``model`` and take its nodes' means over ``windows`` windows of its context (None: the whole
    sample)."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    points = node_points(model)
    chunks = pretraining_windows(pretraining, model.config.block_size, windows)
    device = next(model.parameters()).device
    batch = max(1, MEAN_BATCH_TOKENS // model.config.block_size)
    means = mean_activations(model, points, chunks.to(device), batch=batch, report=None if report is None else (
        lambda done, total: report(f"ablation means, {done:,}/{total:,} windows of pretraining text")))
    return Prepared(model, points, Nodes({name: means[name].numel() for name in points}), means, int(chunks.numel()))


def shuffled(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` whose every weight matrix (and embedding, and bigram factor) has its entries permuted
    (seeded, one permutation per matrix, in parameter order): each matrix keeps its values, its sparsity and its
    scale, and loses every structure training gave it. Norm gains and biases stay as they are."""
    copied = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in sorted(copied.named_parameters()):
            if parameter.dim() >= 2:
                flat = parameter.detach().flatten()
                parameter.copy_(flat[torch.randperm(flat.numel(), generator=generator).to(flat.device)]
                                .view_as(parameter))
    return copied


def _repeat(batch: PairBatch, copies: int) -> PairBatch:
    return PairBatch(batch.tokens.repeat(copies, 1), batch.last.repeat(copies), batch.correct.repeat(copies),
                     batch.wrong.repeat(copies))


def margins_of(model: nn.Module, batch: PairBatch, copies: int = 1) -> torch.Tensor:
    """[copies, N]: each prompt's correct candidate's logit minus its wrong one's, the batch repeated ``copies``
    times (for ``render.pruning.gated``'s copies)."""
    two = evaluate.candidate_logits(model, _repeat(batch, copies) if copies > 1 else batch)
    return (two[:, 0] - two[:, 1]).float().view(copies, -1)


def objective(model: nn.Module, batch: PairBatch, signs: torch.Tensor, per_step: int, seed: int) -> Objective:
    """Pruning's view of contrastive pairs encoded as ``batch`` (rows 2i and 2i + 1 are pair i): each step draws
    ``per_step`` pairs (from a generator seeded by the seed and the step alone, so every setting sees the same
    batches however many train beside it) and gives both prompts of each; the search reads every prompt, in parts of
    similar length."""
    pairs = len(batch.last) // 2
    device = next(model.parameters()).device
    parts: dict[int, list[tuple[torch.Tensor, PairBatch]]] = {}

    def step(i: int, copies: int) -> torch.Tensor:
        drawn = torch.randperm(pairs, generator=torch.Generator().manual_seed(seed * 1_000_003 + i))[:per_step]
        return margins_of(model, batch.take(torch.stack([2 * drawn, 2 * drawn + 1], dim=1).flatten()), copies)

    def search(copies: int) -> torch.Tensor:
        if copies not in parts:
            parts[copies] = evaluate.by_length(batch, max(8, SEARCH_ROWS // copies))
        out = torch.empty(copies, len(batch.last), device=device)
        for rows, part in parts[copies]:
            out[:, rows.to(device)] = margins_of(model, part, copies)
        return out

    return Objective(step, search, signs)


def signs_of(task: Task, pairs: Sequence[Pair]) -> torch.Tensor:
    """[N] +1 where a pair's correct candidate is the task's first, -1 where it is the second."""
    return torch.tensor([1.0 if pair.correct == task.candidates[0] else -1.0 for pair in pairs])


def _margins(prepared: Prepared, batch: PairBatch, gates: Mapping[str, torch.Tensor] | None = None,
             replacement: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """[N] margins of every prompt of ``batch`` (in parts of similar length), gated if ``gates`` are given."""
    out = torch.empty(len(batch.last))
    with torch.no_grad():
        for rows, part in evaluate.by_length(batch, 256):
            if gates is None:
                out[rows] = margins_of(prepared.model, part)[0].cpu()
            else:
                with gated(prepared.points, gates, replacement):
                    out[rows] = margins_of(prepared.model, part)[0].cpu()
    return out


def _on(gates: Mapping[str, torch.Tensor], like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: gate.to(like[name].device) for name, gate in gates.items()}


def _scores(margins: torch.Tensor, reference: torch.Tensor | None = None) -> dict[str, float]:
    """Task loss and accuracy of [N] margins; agreement with ``reference`` margins' choices."""
    scores = {"loss": float(task_losses(margins).mean()), "accuracy": float((margins > 0).float().mean())}
    if reference is not None:
        scores["agreement"] = float(((margins > 0) == (reference > 0)).float().mean())
    return scores


def _size(model: nn.Module, nodes: Nodes, pruned: Pruned) -> int:
    return len(circuit_edges(model, nodes.kept(pruned.order, pruned.k)))


def _choose(model: nn.Module, nodes: Nodes, results: Sequence[Pruned]) -> tuple[int | None, int, dict[int, int]]:
    """(index of the chosen setting or None, index of the setting shown, edges of each met setting): the smallest
    circuit meeting the target, by nodes then edges then order; when none met it, the setting that came closest (by
    best loss, then its k) is shown as not found."""
    edges = {i: _size(model, nodes, p) for i, p in enumerate(results) if p.met}
    if edges:
        chosen = min(edges, key=lambda i: (results[i].k, edges[i], i))
        return chosen, chosen, edges
    return None, min(range(len(results)), key=lambda i: (results[i].best_loss, results[i].best_k, i)), edges


def find_circuit(model: nn.Module, tokenizer: Tokenizer, task: Task, pretraining: np.ndarray,
                 config: CircuitConfig = CircuitConfig(), report: Report | None = None,
                 prepared: Prepared | None = None, null: Prepared | None = None) -> FoundCircuit:
    """Prune ``model`` for ``task`` with every setting of the task's sweep, choose, and measure the evidence.
    ``prepared`` (and the null's, a ``shuffled`` copy prepared likewise) may be passed in so that the means are taken
    once per model for every task; ``report(words)`` hears what is being done. Deterministic for a seed on CPU."""
    started = time.perf_counter()
    say = report or (lambda words: None)
    prepared = prepared or prepare(model, pretraining, config.mean_windows, say)
    nodes, seed, target = prepared.nodes, config.prune.seed, config.prune.target_loss
    contrastive = contrastive_split(task, "prune", config.prune_pairs, seed)
    flat = [pair for both in contrastive for pair in both]
    prune_batch = evaluate.encode_pairs(tokenizer, task, flat)
    signs = signs_of(task, flat)
    task_objective = objective(model, prune_batch, signs, config.batch, seed)
    settings = config.settings(task.name)

    swept = time.perf_counter()
    results = prune(nodes, prepared.points, prepared.means, task_objective, settings, config.prune,
                    report=lambda words: say(f"sweep of {len(settings)}, {words}" if len(settings) > 1 else words))
    chosen, shown, edges_of = _choose(model, nodes, results)
    search = Search(nodes, prepared.points, prepared.means, task_objective, config.prune)
    say("reading the chosen setting's curve")
    extend_curve(search, results[shown], 24)
    chosen, shown, edges_of = _choose(model, nodes, results)  # a closer reading finds a smaller k, or a first one
    sweep_seconds = time.perf_counter() - swept
    pruned = results[shown]
    met = pruned.met

    say("measuring the evidence on held-out pairs")
    eval_pairs = split(task, "eval", config.eval_pairs, seed)
    eval_batch = evaluate.encode_pairs(tokenizer, task, eval_pairs)
    evidence = _evidence(prepared, search, pruned, prune_batch, signs, eval_batch, signs_of(task, eval_pairs), met)
    faithfulness, calibration, circuit_margins, full_margins = evidence

    views = measure_views(prepared, search, pruned, tokenizer, task, seed, say) if met else None
    kept = nodes.kept(pruned.order, pruned.k) if met else {}
    null_record = None
    if config.null:
        null = null or prepare(shuffled(model, seed), pretraining, config.mean_windows,
                               lambda words: say(f"null ({NULL_METHOD}): {words}"))
        null_record = _null(null, tokenizer, task, pruned.setting, prune_batch, signs, eval_batch, config,
                            lambda words: say(f"null ({NULL_METHOD}): {words}"))
    ids = candidate_ids(task, tokenizer)
    taus = nodes.split(pruned.tau)
    return FoundCircuit(
        task=task.name, met=met, loss=pruned.loss, pruned=pruned, all_nodes=nodes,
        nodes=[(name, int(i), float(taus[name][i])) for name, indices in kept.items() for i in indices],
        edges=circuit_edges(model, kept) if met else [],
        logits=logit_reads(model, kept, ids) if met else [],
        sizes=_sizes(model, nodes, pruned),
        target={"target": target, "met": met, "best_loss": pruned.best_loss, "best_k": pruned.best_k},
        faithfulness=faithfulness,
        null=null_record,
        sweep={"settings": [{"k_coef": p.setting.k_coef, "lr": p.setting.lr, "met": p.met,
                             "k": p.k if p.met else None, "edges": edges_of.get(i),
                             "loss": p.loss if p.met else p.best_loss} for i, p in enumerate(results)],
               "chosen": chosen, "seconds": round(sweep_seconds, 1)},
        calibration=calibration,
        examples=_examples(tokenizer, eval_pairs, eval_batch, full_margins, circuit_margins, config.examples),
        config={**config.record(), "k_coef": pruned.setting.k_coef, "lr": pruned.setting.lr,
                "prune_prompts": len(flat), "mean_tokens": prepared.mean_tokens, "nodes_total": nodes.total,
                "candidate_tokens": token_texts(tokenizer, ids.values()),
                "seconds": round(time.perf_counter() - started, 1)},
        views=views,
    )


def _calibrated(prepared: Prepared, prune_batch: PairBatch, signs: torch.Tensor, gates: Mapping[str, torch.Tensor],
                replacement: Mapping[str, torch.Tensor], steps: int) -> Calibration:
    """The scale and shift of the circuit read with ``gates`` and ``replacement``, fitted on the pruning prompts."""
    return calibrate(_margins(prepared, prune_batch, gates, replacement), signs, steps)


def _evidence(prepared: Prepared, search: Search, pruned: Pruned, prune_batch: PairBatch, prune_signs: torch.Tensor,
              batch: PairBatch, signs: torch.Tensor, met: bool) -> tuple[dict, dict, torch.Tensor | None, torch.Tensor]:
    """CircuitKey.FAITHFULNESS and CALIBRATION, and the circuit's (calibrated) and the full model's held-out margins
    (the circuit's None when not met)."""
    nodes, means, steps = prepared.nodes, prepared.means, search.config.calibration_steps
    full = _margins(prepared, batch)
    none = _on(nodes.top(pruned.order, 0), means)
    search.read([(pruned, 0)])  # k = 0 is on every curve; this only makes sure
    all_ablated = pruned.calibrations[0].apply(_margins(prepared, batch, none, means), signs)
    faithfulness = {"pairs": len(batch.last), "full": _scores(full), "all_ablated": _scores(all_ablated, full)}
    zero_cal = {"scale": pruned.calibrations[0].scale, "shift": pruned.calibrations[0].shift}
    at = pruned.calibrations[pruned.k]
    calibration = {"scale": at.scale, "shift": at.shift, "k": pruned.k, "all_ablated": zero_cal}
    if not met:
        return faithfulness, calibration, None, full
    gates = _on(nodes.top(pruned.order, pruned.k), means)
    zeros = {name: torch.zeros_like(mean) for name, mean in means.items()}
    alone = at.apply(_margins(prepared, batch, gates, means), signs)
    zero_at = _calibrated(prepared, prune_batch, prune_signs, gates, zeros, steps)
    alone_zero = zero_at.apply(_margins(prepared, batch, gates, zeros), signs)
    without = _margins(prepared, batch, {name: 1 - gate for name, gate in gates.items()}, means)
    difference = task_losses(full) - task_losses(alone)  # > 0 where the circuit does better
    interval = 1.96 * float(difference.std()) / math.sqrt(len(difference))
    faithfulness |= {"circuit_mean": _scores(alone, full), "circuit_zero": _scores(alone_zero, full),
                     "ablated_mean": _scores(without, full), "beats_full": float(difference.mean()) > interval,
                     "interval": interval}
    calibration["circuit_zero"] = {"scale": zero_at.scale, "shift": zero_at.shift}
    return faithfulness, calibration, alone.float(), full


def _null(null: Prepared, tokenizer: Tokenizer, task: Task, setting: Setting, prune_batch: PairBatch,
          signs: torch.Tensor, eval_batch: PairBatch, config: CircuitConfig, report: Report) -> dict:
    """CircuitKey.NULL: ``setting``'s pruning on the shuffled model, on the same pairs."""
    null_objective = objective(null.model, prune_batch, signs, config.batch, config.prune.seed)
    (result,) = prune(null.nodes, null.points, null.means, null_objective, [setting], config.prune, report)
    full = _margins(null, eval_batch)
    return {"method": NULL_METHOD, "seed": config.prune.seed, "met": result.met,
            "k": result.k if result.met else None,
            "edges": _size(null.model, null.nodes, result) if result.met else None,
            "loss": result.best_loss, "full": _scores(full)}


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


def _examples(tokenizer: Tokenizer, pairs: list[Pair], batch: PairBatch, full: torch.Tensor,
              circuit: torch.Tensor | None, count: int) -> list[dict]:
    """The first ``count`` held-out pairs: the prompt's tokens as the model reads them, and each model's choice with
    the probability it gives the correct candidate (of the two); the circuit's is None when none was found."""
    def verdict(margin: float, pair: Pair) -> dict:
        return {"choice": pair.correct if margin > 0 else pair.wrong,
                "p_correct": round(float(torch.sigmoid(torch.tensor(margin))), 4)}

    out = []
    for i, pair in enumerate(pairs[:count]):
        ids = batch.tokens[i, :int(batch.last[i]) + 1].tolist()
        out.append({"tokens": token_texts(tokenizer, ids), "correct": pair.correct, "wrong": pair.wrong,
                    "full": verdict(float(full[i]), pair),
                    "circuit": verdict(float(circuit[i]), pair) if circuit is not None else None})
    return out
