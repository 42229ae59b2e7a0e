"""A pruned circuit as the first k nodes of its order, for every k at once: the weights that join the nodes, each with
the k from which it is in the circuit, and what the nodes do at a prompt's last position.

The circuit at k keeps the first k nodes of the order (``render.pruning.Nodes.kept``) and its edges are the nonzero
weights between kept nodes (``render.circuit_graph.circuit_edges``). A weight joins the circuit as soon as both its
ends are kept, that is for every k above the larger rank of its two ends (its ``appears``), so counting weights by
``appears`` gives the edge count of every k in one pass over the matrices, and listing those with ``appears < k``
gives the circuit's edges at k without looking at a weight again.

Pure torch: the caller passes the model, its ``Nodes`` and the order.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from render.circuit_graph import connections
from render.hooks import stream
from render.pruning import Nodes


@dataclass(frozen=True)
class RankedEdge:
    appears: int  # the larger rank of its ends: the weight is in the circuit at every k > appears
    src_rank: int
    dst_rank: int
    weight: float


@dataclass(frozen=True)
class _Ranked:
    src: torch.Tensor  # [S] the ranks of the matrix's source nodes
    dst: torch.Tensor  # [D] its destination nodes'
    matrix: torch.Tensor  # [D, S]

    @property
    def nonzero(self) -> torch.Tensor:
        return self.matrix != 0

    @property
    def appears(self) -> torch.Tensor:
        return torch.maximum(self.dst[:, None], self.src[None, :])


def ranks(order: torch.Tensor) -> torch.Tensor:
    """[total] each flat node's rank in ``order`` (flat node indices, best first)."""
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), dtype=order.dtype)
    return rank


def _ranked(model: nn.Module, nodes: Nodes, order: torch.Tensor) -> Iterator[_Ranked]:
    by_point = nodes.split(ranks(order))
    for connection in connections(model):
        yield _Ranked(by_point[connection.src], by_point[connection.dst], connection.matrix.float().cpu())


def edges_in(model: nn.Module, nodes: Nodes, order: torch.Tensor) -> torch.Tensor:
    """[total] by rank: how many weights join the node of that rank to nodes ranked before it. Their cumulative sum
    up to k - 1 is the circuit's edge count at k."""
    counts = torch.zeros(nodes.total, dtype=torch.long)
    for ranked in _ranked(model, nodes, order):
        counts += torch.bincount(ranked.appears[ranked.nonzero], minlength=nodes.total)
    return counts


def listed_up_to(counts: torch.Tensor, budget: int, at_least: int) -> int:
    """The largest k whose circuit has at most ``budget`` edges (``counts`` from ``edges_in``), and never less than
    ``at_least`` (the circuit's own k, whose edges are always listed)."""
    within = int(torch.searchsorted(torch.cumsum(counts, 0), budget, right=True))
    return max(within, at_least)


def ranked_edges(model: nn.Module, nodes: Nodes, order: torch.Tensor, below: int) -> list[RankedEdge]:
    """Every weight of the circuit at k = ``below`` (those with ``appears < below``), with its ends' ranks."""
    out = []
    for ranked in _ranked(model, nodes, order):
        appears = ranked.appears
        dst, src = torch.nonzero(ranked.nonzero & (appears < below), as_tuple=True)
        out.extend(RankedEdge(*values) for values in zip(
            appears[dst, src].tolist(), ranked.src[src].tolist(), ranked.dst[dst].tolist(),
            ranked.matrix[dst, src].tolist(), strict=True))
    return out


def at_last(model: nn.Module, points: Mapping[str, nn.Module], tokens: torch.Tensor, last: torch.Tensor,
            whole: Collection[str] = ()) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One forward pass (no gradient) over right-padded prompts: each point's activation at each row's ``last``
    position ({point: [rows, width]}), and the whole activation ([rows, positions, width]) of the points named in
    ``whole`` only, so a large model's pass holds one point's activations at a time besides those. On the CPU."""
    device = next(model.parameters()).device
    rows, at = torch.arange(len(last), device=device), last.to(device)
    found: dict[str, torch.Tensor] = {}
    kept: dict[str, torch.Tensor] = {}

    def take(name: str, act: torch.Tensor) -> None:
        found[name] = act[rows, at].float().cpu()
        if name in whole:
            kept[name] = act.float().cpu()

    with torch.no_grad():
        stream(model, points, tokens.to(device), take)
    return found, kept


def last_position_pattern(q: torch.Tensor, k: torch.Tensor, last: torch.Tensor, head: int, d_head: int,
                          sink_logit: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One head's attention from each row's ``last`` position, recomputed from the q and k channels the attention
    read ([rows, positions, n_head * d_head], after any activation sparsity), as the model computes it: softmax of
    q . k / sqrt(d_head) over the positions up to ``last``, with one more slot of logit ``sink_logit`` when the model
    has an attention sink. Returns ([rows, positions], zero past each row's last; the sink's weight [rows] or None)."""
    channels = slice(head * d_head, (head + 1) * d_head)
    rows = torch.arange(len(last))
    query = q[rows, last, channels].double()  # [rows, d_head]
    logits = torch.einsum("rd,rtd->rt", query, k[:, :, channels].double()) / math.sqrt(d_head)
    future = torch.arange(k.shape[1])[None, :] > last[:, None]
    logits = logits.masked_fill(future, -math.inf)
    if sink_logit is None:
        return torch.softmax(logits, dim=1).float(), None
    both = torch.softmax(torch.cat([logits.new_full((len(last), 1), sink_logit), logits], dim=1), dim=1)
    return both[:, 1:].float(), both[:, 0].float()
