"""What a found circuit's page shows besides the circuit at its own k, measured by the job and stored beside it
(``store.circuit_views``): the whole node order, so the page can show the circuit at any k of its curve; the loss
when each block's attention or MLP nodes are ablated, at every k the page offers; and how the first nodes of the order
and the heads among them behave on held-out contrastive pairs.

- **The k's a page offers** are the curve's geometric grid (``render.pruning.curve_points`` at ``VIEW_POINTS``, read
  for every setting before the bisection) and the circuit's own k: every one is on the curve, so its loss is known,
  and the per-group ablations are measured at each. The grid rather than every k the search read keeps the
  ablations to a few dozen masks (each a forward pass over the pruning prompts).
- **Per-group ablations**: at k, the circuit with one group's kept nodes (a block's attention, or its MLP) also
  mean-ablated, read as the curve is (the calibrated task loss on the pruning pairs, with a calibration fitted for
  that mask), so a bar sits on the same scale as the curve's loss at k.
- **The order's weights**: every weight between nodes, each with the rank from which it is in the circuit
  (``render.circuit_order``), counted for every k and listed while the circuit has at most ``EDGE_BUDGET`` of them.
- **Held-out pairs**: ``ACTIVATION_PAIRS`` contrastive pairs of the evaluation split (two prompts from one seed, one
  per answer; pruning never saw them), read by the *full* model, so the values do not depend on k: each of the first
  nodes of the order at the last position (where the candidates are scored), and the attention of the heads whose
  q, k or v channels are among those nodes, from the last position over the prompt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from tokenizers import Tokenizer
from torch import nn

from precompute.lm import evaluate
from precompute.lm.task_check import candidate_ids
from precompute.lm.tasks import Task, contrastive_split
from precompute.lm.tokenizer import token_texts
from render.circuit_graph import logit_reads
from render.circuit_order import RankedEdge, at_last, edges_in, last_position_pattern, listed_up_to, ranked_edges
from render.lm_weights import WRITES
from render.pruning import Nodes, Pruned, Search, curve_points
from store.circuit_views import Probe

VIEW_POINTS = 12  # the curve's grid of k's a page offers (the search reads it for every setting)
EDGE_BUDGET = 100_000  # the order's weights are listed for every k whose circuit has at most this many
ACTIVATION_PAIRS = 32  # held-out contrastive pairs the nodes are read on
PATTERN_PAIRS = 6  # of them, those whose attention patterns are kept
MAX_HEADS = 12
ACTIVATION_NODES = (64, 256)  # the first nodes of the order read on the pairs: the circuit's k within these bounds
DIGITS = 4  # significant digits kept of activations and attention weights

Report = Callable[[str], None]

if TYPE_CHECKING:  # precompute.lm.circuits imports this module
    from precompute.lm.circuits import Prepared


@dataclass
class CircuitViews:
    """What ``store.circuit_views`` keeps for a found circuit."""

    order: list[tuple[str, int, float, int]]  # by rank: (layer, channel, tau, edges_in)
    edges: list[RankedEdge]  # the order's weights with appears < record["listed_k"]
    record: dict  # CircuitKey.VIEWS
    probes: dict[str, Any]  # store.circuit_views.Probe -> its document


def view_ks(pruned: Pruned, total: int) -> list[int]:
    """The k's a page offers: the curve's grid, without k = 0 (no nodes), and the circuit's own k."""
    return sorted({k for k in curve_points(total, VIEW_POINTS) if k > 0} | {pruned.k})


def groups(nodes: Nodes) -> dict[str, torch.Tensor]:
    """Each block's attention and MLP nodes ("0.attn", "0.mlp", ...): {group: [total] 0/1}, in forward order."""
    names = list(dict.fromkeys(".".join(point.split(".")[:2]) for point in nodes.sizes))
    return {group: torch.cat([torch.full((width,), float(point.startswith(group + "."))) for point, width
                              in nodes.sizes.items()]) for group in names}


def ablations(search: Search, nodes: Nodes, order: torch.Tensor, ks: list[int]) -> dict:
    """Probe.ABLATIONS: at each k, the calibrated loss with each group's kept nodes also mean-ablated."""
    members = groups(nodes)
    masks, where = [], []
    for k in ks:
        top = nodes.top_flat(order, k)
        for place, member in enumerate(members.values()):
            if bool((top * member).any()):
                masks.append(top * (1 - member))
                where.append((k, place))
    losses = {k: [None] * len(members) for k in ks}
    for (k, place), (loss, _) in zip(where, search.losses(masks), strict=True):
        losses[k][place] = round(loss, 6)
    return {"groups": list(members), "losses": [[k, losses[k]] for k in ks]}


def flat_points(nodes: Nodes) -> list[tuple[str, int]]:
    """(point, channel) of every flat node index."""
    return [(name, channel) for name, width in nodes.sizes.items() for channel in range(width)]


def _rounded(values: torch.Tensor) -> list:
    return [float(f"{v:.{DIGITS}g}") for v in values.tolist()]


def pair_probes(model: nn.Module, points: Mapping[str, nn.Module], nodes: Nodes, order: torch.Tensor, tokenizer: Tokenizer, task: Task, seed: int,
                first: int) -> dict[str, Any]:
    """Probe.PAIRS, ACTIVATIONS and HEADS: the full model on held-out contrastive pairs, the first ``first`` nodes
    of the order at the last position, and the attention of the heads among them."""
    pairs = contrastive_split(task, "eval", ACTIVATION_PAIRS, seed)
    flat = [pair for both in pairs for pair in both]  # rows 2i (answering the first candidate) and 2i + 1
    batch = evaluate.encode_pairs(tokenizer, task, flat)
    points_of = flat_points(nodes)
    top = [points_of[int(i)] for i in order[:first]]
    d_head = model.config.d_head
    heads = list(dict.fromkeys((int(name.split(".")[0]), channel // d_head) for name, channel in top
                               if name.split(".", 1)[1] in ("attn.q", "attn.k", "attn.v")))[:MAX_HEADS]
    whole = {f"{block}.attn.{which}" for block, _ in heads for which in ("q", "k")}
    last_values, full = at_last(model, points, batch.tokens, batch.last, whole)
    with torch.no_grad():
        margins = evaluate.candidate_logits(model, batch).float().cpu()
    p_correct = torch.sigmoid(margins[:, 0] - margins[:, 1])
    shown = range(min(PATTERN_PAIRS, len(pairs)))
    rows = torch.tensor([row for i in shown for row in (2 * i, 2 * i + 1)], dtype=torch.long)
    head_record = []
    for block, head in heads:
        attention = model.transformer.h[block].attn
        sink = float(attention.sink_logit[head].detach()) if model.config.sink else None
        q, k = full[f"{block}.attn.q"][rows], full[f"{block}.attn.k"][rows]
        pattern, sink_weight = last_position_pattern(q, k, batch.last[rows], head, d_head, sink)
        lengths = (batch.last[rows] + 1).tolist()
        head_record.append({"block": block, "head": head, "patterns": [
            [_rounded(pattern[2 * i, :lengths[2 * i]]), _rounded(pattern[2 * i + 1, :lengths[2 * i + 1]])]
            for i in shown], "sink": None if sink_weight is None else [
            _rounded(sink_weight[2 * i:2 * i + 2]) for i in shown]})
    return {
        Probe.PAIRS: [{"tokens": [token_texts(tokenizer, batch.tokens[row, :int(batch.last[row]) + 1].tolist())
                                  for row in (2 * i, 2 * i + 1)],
                       "answers": [a.correct, b.correct],
                       "p_correct": _rounded(p_correct[2 * i:2 * i + 2])} for i, (a, b) in enumerate(pairs)],
        Probe.ACTIVATIONS: {"nodes": first, "values": [
            [_rounded(last_values[name][2 * i:2 * i + 2, channel]) for i in range(len(pairs))]
            for name, channel in top]},
        Probe.HEADS: head_record,
    }


def measure_views(prepared: Prepared, search: Search, pruned: Pruned, tokenizer: Tokenizer, task: Task, seed: int,
                  report: Report) -> CircuitViews:
    """Everything ``CircuitViews`` holds for the found circuit ``pruned``, from the model ``prepared`` holds."""
    started = time.perf_counter()
    model, nodes, order = prepared.model, prepared.nodes, pruned.order
    ks = view_ks(pruned, nodes.total)
    search.read([(pruned, k) for k in ks])  # on the curve's grid already: this only makes sure
    report(f"ablating each block's attention and MLP at {len(ks)} k's")
    probes: dict[str, Any] = {Probe.ABLATIONS: ablations(search, nodes, order, ks)}
    report("the order's weights, and the nodes on held-out pairs")
    counts = edges_in(model, nodes, order)
    listed = listed_up_to(counts, EDGE_BUDGET, pruned.k)
    first = min(nodes.total, max(ACTIVATION_NODES[0], min(ACTIVATION_NODES[1], pruned.k)))
    probes |= pair_probes(model, prepared.points, nodes, order, tokenizer, task, seed, first)
    writes = {name: torch.arange(width) for name, width in nodes.sizes.items() if name.split(".", 1)[1] in WRITES}
    probes[Probe.LOGITS] = logit_reads(model, writes, candidate_ids(task, tokenizer))
    points_of, taus = flat_points(nodes), pruned.tau.tolist()
    order_rows = [(*points_of[flat], float(taus[flat]), int(counts[rank]))
                  for rank, flat in enumerate(order.tolist())]
    edges = ranked_edges(model, nodes, order, listed)
    record = {"nodes": nodes.total, "ks": ks, "listed_k": listed, "activation_nodes": first,
              "pairs": len(probes[Probe.PAIRS]), "pattern_pairs": min(PATTERN_PAIRS, len(probes[Probe.PAIRS])),
              "d_head": model.config.d_head, "groups": probes[Probe.ABLATIONS]["groups"],
              "seconds": round(time.perf_counter() - started, 1)}
    return CircuitViews(order_rows, edges, record, probes)
