"""What a language model's weights say about its units, without running it: the tokens a unit's output pushes up and
down (logit effects), and which units read from which (edges).

The model is a ``precompute.lm.model.SparseGPT`` (or anything with its parameter names); units are its hook points
(``{i}.resid_pre``, ``{i}.attn.q|k|v``, ``{i}.resid_mid``, ``{i}.mlp.post_act``, and the last block's
``resid_post``); residual channel c is the same index in every residual layer.

Norm gains are folded in. A pre-norm block reads the residual stream through ``ln_1`` / ``ln_2`` and the unembedding
reads it through ``ln_f``: each multiplies channel c by its gain g[c] after dividing the whole vector by its RMS (its
standard deviation, for LayerNorm). The division is by one positive number per token, shared by every channel, so it
changes no unit's ranking of its inputs and is left out; the gain is per channel, so a weight from channel c is
multiplied by g[c]. LayerNorm's mean subtraction (which spreads every channel over all others) and biases are left
out too.

What is not here: attention's query-key interaction (a q channel and a k channel meet in a product, not through a
weight between them, and which positions attend depends on the input) and the attention pattern that carries a
value channel from the positions it was read at to the one it writes at. The edges from v channels to the residual
stream are the output projection's weights alone; activation sparsity (AbsTopK) after a projection is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# The hook points' kinds (``{block}.{kind}``), as the model names them
RESID_PRE, RESID_MID, RESID_POST, MLP = "resid_pre", "resid_mid", "resid_post", "mlp.post_act"
QKV = ("attn.q", "attn.k", "attn.v")
# A block's residual read channels (the norms' outputs) and write channels (what attention and the MLP add): pruning's
# nodes. Their connections are listed per circuit (``render.circuit_graph``), not here.
READS, WRITES = ("attn.act_in", "mlp.act_in"), ("attn.out", "mlp.out")

# A matrix with at most this fraction of its weights nonzero is a weight-sparse model's (the paper's are far sparser):
# each of its weights is an edge. A dense matrix's are all nonzero; listing them all would bury the strong ones.
SPARSE_AT_MOST = 0.25
STRONGEST = 16  # edges kept per unit and direction of a dense matrix
EFFECTS = 10  # tokens listed as promoted and as suppressed


@dataclass(frozen=True)
class Weights:
    """The weights from one layer's units to another's: ``matrix[dst, src]``, norm gain folded in."""

    src: str  # the layer read from
    dst: str  # the layer that reads
    matrix: torch.Tensor  # [dst units, src units]
    raw: torch.Tensor  # [dst units, src units] the matrix as stored, before the gain: its zeros are the sparse ones


def source(layer: str, n_layer: int) -> str | None:
    """The layer whose units ``layer``'s units read by a weight matrix; None for the embeddings' residual stream
    (``0.resid_pre``), which reads tokens, and for read and write channels."""
    block_text, _, kind = layer.partition(".")
    block = int(block_text)
    if kind in QKV:
        return f"{block}.{RESID_PRE}"
    if kind == RESID_MID:
        return f"{block}.{QKV[2]}"
    if kind == MLP:
        return f"{block}.{RESID_MID}"
    if kind == RESID_PRE and 0 < block < n_layer:
        return f"{block - 1}.{MLP}"
    if kind == RESID_POST and block == n_layer - 1:
        return f"{block}.{MLP}"
    if (kind == RESID_PRE and block == 0) or kind in READS + WRITES:
        return None
    raise ValueError(f"no language-model layer {layer!r} in a model of {n_layer} blocks")


def incoming(model: nn.Module, layer: str) -> Weights | None:
    """The weights by which ``layer``'s units read those of its ``source``; None where it has none. A block's input
    projections are cut to the residual channels (the position embeddings some models concatenate to them are no
    unit)."""
    src = source(layer, model.config.n_layer)
    if src is None:
        return None
    block = model.transformer.h[int(layer.partition(".")[0])]
    d_model, d_attn = model.config.d_model, model.config.d_attn
    kind = layer.partition(".")[2]
    if kind in QKV:
        which = QKV.index(kind)
        return _folded(src, layer, block.attn.c_attn.weight[which * d_attn:(which + 1) * d_attn, :d_model], block.ln_1)
    if kind == RESID_MID:
        return _folded(src, layer, block.attn.c_proj.weight, None)
    if kind == MLP:
        return _folded(src, layer, block.mlp.c_fc.weight[:, :d_model], block.ln_2)
    writer = model.transformer.h[int(src.partition(".")[0])]  # a residual stream after an MLP
    return _folded(src, layer, writer.mlp.c_proj.weight, None)


def _folded(src: str, dst: str, raw: torch.Tensor, norm: torch.nn.Module | None) -> Weights:
    """A matrix [dst, src] with the gain of the norm its src channels pass through (if any) folded in."""
    raw = raw.detach().float()
    return Weights(src, dst, raw * norm.weight.detach().float() if norm is not None else raw, raw)


def edges(weights: Weights, strongest: int = STRONGEST) -> tuple[torch.Tensor, torch.Tensor]:
    """The (dst, src) index pairs [E, 2] to keep as edges and their weights [E]: every nonzero weight of a sparse
    matrix (at most ``SPARSE_AT_MOST`` of it nonzero); of a dense one, each dst unit's ``strongest`` inputs and each
    src unit's ``strongest`` outputs by |weight| (an edge strong for either end is kept once)."""
    if weights.raw.count_nonzero() <= SPARSE_AT_MOST * weights.raw.numel():
        pairs = torch.nonzero(weights.raw)
    else:
        magnitude = weights.matrix.abs()
        keep = torch.zeros_like(magnitude, dtype=torch.bool)
        keep.scatter_(1, magnitude.topk(min(strongest, magnitude.shape[1]), dim=1).indices, True)
        keep.scatter_(0, magnitude.topk(min(strongest, magnitude.shape[0]), dim=0).indices, True)
        pairs = torch.nonzero(keep)
    return pairs, weights.matrix[pairs[:, 0], pairs[:, 1]]


def writes_residual(layer: str) -> bool:
    """Whether a layer's units have logit effects: residual channels, write channels and MLP neurons (q, k, v and
    the read channels write no residual channel directly)."""
    return layer.partition(".")[2] in (RESID_PRE, RESID_MID, RESID_POST, MLP, *WRITES)


def logit_effects(model: nn.Module, layer: str, k: int = EFFECTS) -> tuple[torch.Tensor, ...]:
    """For each unit of ``layer``, the logit change per unit of its activation along its output direction, read
    through ``ln_f``'s gain and the unembedding: a residual channel's direction is its unit vector, an MLP neuron's
    is its column of the MLP's output projection. Returns the ``k`` most promoted tokens [U, k] and their values
    [U, k], then the ``k`` most suppressed (most negative first)."""
    if not writes_residual(layer):
        raise ValueError(f"units of {layer!r} write no residual direction, so have no logit effects")
    with torch.no_grad():
        unembed = model.lm_head.weight.float() * model.transformer.ln_f.weight.float()  # [vocab, d_model]
        block, _, kind = layer.partition(".")
        if kind == MLP:
            effects = unembed @ model.transformer.h[int(block)].mlp.c_proj.weight.float()  # [vocab, d_mlp]
        else:
            effects = unembed  # [vocab, d_model]: column c is channel c's unit vector through the unembedding
        up, down = effects.T.topk(k, dim=1), effects.T.topk(k, dim=1, largest=False)
    return up.indices, up.values, down.indices, down.values
