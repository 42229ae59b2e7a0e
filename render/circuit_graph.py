"""The wiring of a pruned circuit: which of its kept nodes connect by a weight, and how its residual writes reach the
two candidate logits.

Nodes are channels of a ``precompute.lm.model.SparseGPT``'s hook points (``{i}.attn.act_in``, ``{i}.attn.q|k|v``,
``{i}.attn.out``, ``{i}.mlp.act_in``, ``{i}.mlp.post_act``, ``{i}.mlp.out``). Inside a block they connect by the
block's matrices: read channels to q, k and v (``c_attn``), v channels to attention's write channels (``c_proj``: a
head's value channel j leaves attention as channel j of its output, the pattern only mixes positions), read channels
to MLP neurons (``c_fc``) and neurons to the MLP's write channels (``c_proj``). A circuit's edges are the nonzero
weights between kept nodes, as the paper counts them; in a dense model that is every weight between kept nodes.
Read channels are the norms' outputs, so no gain sits on these edges.

Between blocks, a write channel reaches every later read channel of the same index through the residual stream (an
identity, no weight: not an edge), and the unembedding reads the final stream through ``ln_f``'s gain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from render.lm_weights import WRITES


@dataclass(frozen=True)
class Connection:
    """The matrix [dst channels, src channels] by which ``dst`` reads ``src`` inside one block."""

    src: str
    dst: str
    matrix: torch.Tensor


def connections(model: nn.Module) -> list[Connection]:
    """Every weight connection between node layers, block by block."""
    out = []
    d_attn = model.config.d_attn
    for i, block in enumerate(model.transformer.h):
        qkv = block.attn.c_attn.weight.detach()  # [3 * d_attn, d_block_in]
        for which, kind in enumerate(("q", "k", "v")):
            out.append(Connection(f"{i}.attn.act_in", f"{i}.attn.{kind}", qkv[which * d_attn:(which + 1) * d_attn]))
        out.append(Connection(f"{i}.attn.v", f"{i}.attn.out", block.attn.c_proj.weight.detach()))
        out.append(Connection(f"{i}.mlp.act_in", f"{i}.mlp.post_act", block.mlp.c_fc.weight.detach()))
        out.append(Connection(f"{i}.mlp.post_act", f"{i}.mlp.out", block.mlp.c_proj.weight.detach()))
    return out


@dataclass(frozen=True)
class Edge:
    src: str
    src_index: int
    dst: str
    dst_index: int
    weight: float


def circuit_edges(model: nn.Module, kept: dict[str, torch.Tensor]) -> list[Edge]:
    """The nonzero weights between kept nodes; ``kept`` maps a layer to its kept channel indices [k]."""
    edges = []
    for connection in connections(model):
        src, dst = kept.get(connection.src), kept.get(connection.dst)
        if src is None or dst is None or not len(src) or not len(dst):
            continue
        block = connection.matrix[dst][:, src].float()  # [kept dst, kept src]
        for d, s in torch.nonzero(block).tolist():
            edges.append(Edge(connection.src, int(src[s]), connection.dst, int(dst[d]), float(block[d, s])))
    return edges


def logit_reads(model: nn.Module, kept: dict[str, torch.Tensor], candidates: dict[str, int]) -> list[dict]:
    """How each candidate's logit reads each kept write channel directly: its unembedding row times ``ln_f``'s gain
    at that channel (the final norm's division by the stream's RMS is shared by all channels and left out); zero
    reads (a sparse unembedding's) are left out. ``candidates`` maps a candidate's text to its token id."""
    with torch.no_grad():
        unembed = model.lm_head.weight.float() * model.transformer.ln_f.weight.float()  # [vocab, d_model]
    reads = []
    for layer, channels in kept.items():
        if layer.partition(".")[2] not in WRITES:
            continue
        for channel in channels.tolist():
            for text, token in candidates.items():
                if weight := float(unembed[token, channel]):
                    reads.append({"layer": layer, "index": channel, "token": text, "weight": weight})
    return reads
