"""The weight-sparse GPT of "Weight-sparse transformers have interpretable circuits", as one torch module.

A GPT-2-style decoder with pre-norm blocks (RMSNorm or LayerNorm), heads of ``d_head`` channels, an optional dense
bigram table added to the logits, optional position embeddings, and AbsTopK activation sparsity at any of the paper's
locations. Weight sparsity is not a property of the module: training keeps most weights at zero (see
``precompute.lm.sparsity``), so the same module with sparsity switched off is the dense baseline.

Parameter names follow the released checkpoints' layout (``transformer.h.{i}.attn.c_attn.weight``, ...) so those
load with ``load_state_dict``; the config's field names are theirs too. Every activation a reader may want has a
named hook point (``model.hook_points()``: ``0.attn.q``, ``1.mlp.post_act``, ``0.resid_mid``, ...), an identity module
whose forward hooks see, and may replace, the activation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

# Where AbsTopK may act, by the released configs' names.
SPARSITY_LOCATIONS = ("attn_in", "attn_out", "attn_q", "attn_k", "attn_v", "mlp_in", "mlp_out", "mlp_neuron",
                      "resid_post_attn", "resid_post_mlp")


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 2048
    block_size: int = 256  # longest context
    n_layer: int = 2
    n_head: int = 8
    d_head: int = 16
    d_model: int = 128
    d_mlp: int = 512
    bias: bool = False  # biases in the linear layers
    ln_bias: bool = False  # bias in LayerNorm (rms_norm=False only)
    rms_norm: bool = True
    activation_type: Literal["gelu", "relu"] = "gelu"
    residual_activation_type: Literal["identity", "relu"] = "identity"  # a ReLU on the residual stream
    afrac: float | None = 0.25  # fraction of activations AbsTopK keeps; None: no activation sparsity
    afrac_loctypes: str = "attn_in,attn_out,mlp_in,mlp_out,attn_q,attn_k,attn_v,mlp_neuron"
    tied_unembed: bool = False
    enable_bigram_table: bool = True
    learnable_bigram_table: bool = True
    bigram_table_rank: int | None = None  # None: a full [vocab, vocab] table; r: the product of [vocab, r] x [r, vocab]
    position_embedding: bool = False  # learned position embeddings added to the token embeddings
    d_pos_emb: int | None = None  # position embeddings concatenated to each block's input instead (needs norm)
    sinusoidal_cat_pos_emb: bool = False  # the concatenated position embeddings are fixed sinusoids
    sink: bool = False  # a learned per-head attention sink: a logit for "attend to nothing"

    def __post_init__(self):
        unknown = set(self.locations()) - set(SPARSITY_LOCATIONS)
        if unknown:
            raise ValueError(f"unknown activation-sparsity locations {sorted(unknown)}; known: {SPARSITY_LOCATIONS}")
        if self.activation_type not in ("gelu", "relu"):
            raise ValueError(f"activation_type must be gelu or relu, not {self.activation_type!r}")
        if self.residual_activation_type not in ("identity", "relu"):
            raise ValueError(f"residual_activation_type must be identity or relu, not {self.residual_activation_type!r}")

    def locations(self) -> tuple[str, ...]:
        """The locations AbsTopK acts at (none without ``afrac``)."""
        if self.afrac is None:
            return ()
        return tuple(filter(None, (name.strip() for name in self.afrac_loctypes.split(","))))

    @property
    def d_attn(self) -> int:
        return self.n_head * self.d_head

    @property
    def d_block_in(self) -> int:
        """Width a block's attention and MLP read: the residual stream, plus concatenated position embeddings."""
        return self.d_model + (self.d_pos_emb or 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        return cls(**values)


class AbsTopK(nn.Module):
    """Keep the ``k`` entries of largest magnitude along the last axis, zero the rest (k = frac x width)."""

    def __init__(self, frac: float | None):
        super().__init__()
        self.frac = frac

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., width] -> [..., width]
        if self.frac is None:
            return x
        k = int(self.frac * x.shape[-1])
        kept = torch.topk(x.abs(), k, dim=-1, sorted=False).indices
        return torch.zeros_like(x).scatter_(-1, kept, x.gather(-1, kept))


class HookPoint(nn.Identity):
    """A named place in the forward pass; register forward hooks on it to read or replace the activation."""


def _norm(config: GPTConfig, width: int) -> nn.Module:
    if config.rms_norm:
        return nn.RMSNorm(width)  # eps: the dtype's machine epsilon, as the released models use
    return nn.LayerNorm(width, eps=1e-5, bias=config.ln_bias)


class Attention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.c_attn = nn.Linear(config.d_block_in, 3 * config.d_attn, bias=config.bias)
        self.c_proj = nn.Linear(config.d_attn, config.d_model, bias=config.bias)
        if config.sink:
            self.sink_logit = nn.Parameter(torch.zeros(config.n_head))
        where = config.locations()
        self.sparse_in, self.sparse_out = (AbsTopK(config.afrac if loc in where else None)
                                           for loc in ("attn_in", "attn_out"))
        self.sparse_q, self.sparse_k, self.sparse_v = (AbsTopK(config.afrac if loc in where else None)
                                                       for loc in ("attn_q", "attn_k", "attn_v"))
        self.hook_act_in, self.hook_q, self.hook_k, self.hook_v, self.hook_z = (HookPoint() for _ in range(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, d_block_in] -> [B, T, d_model]
        c = self.config
        batch, time, _ = x.shape
        x = self.hook_act_in(self.sparse_in(x))
        q, k, v = self.c_attn(x).split(c.d_attn, dim=-1)  # each [B, T, n_head * d_head]
        q = self.hook_q(self.sparse_q(q))
        k = self.hook_k(self.sparse_k(k))
        v = self.hook_v(self.sparse_v(v))
        q, k, v = (t.view(batch, time, c.n_head, c.d_head).transpose(1, 2) for t in (q, k, v))  # [B, H, T, dh]
        scale = 1.0 / math.sqrt(c.d_head)
        if c.sink:
            z = self._attend_with_sink(q, k, v, scale)
        else:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        z = self.hook_z(z.transpose(1, 2).reshape(batch, time, c.d_attn))  # [B, T, n_head * d_head]
        return self.sparse_out(self.c_proj(z))

    def _attend_with_sink(self, q, k, v, scale: float) -> torch.Tensor:
        """Causal attention over the keys plus one always-visible slot with key and value zero and a learned logit:
        the head may put weight on nothing. The mask is one per head, shared by the batch: a mask per row would be
        [B, H, T, 1 + T], which autograd keeps for the backward pass of every block while pruning trains."""
        batch, heads, time, d_head = q.shape
        zeros = q.new_zeros(batch, heads, 1, d_head)
        k, v = torch.cat([zeros, k], dim=2), torch.cat([zeros, v], dim=2)  # [B, H, 1 + T, dh]
        visible = torch.ones(time, time, dtype=torch.bool, device=q.device).tril()
        visible = torch.cat([visible.new_ones(time, 1), visible], dim=1)  # [T, 1 + T]
        mask = torch.zeros(time, time + 1, dtype=q.dtype, device=q.device)
        mask = mask.masked_fill(~visible, torch.finfo(q.dtype).min).repeat(heads, 1, 1)  # [H, T, 1 + T]
        mask[..., 0] += self.sink_logit.to(q.dtype).view(heads, 1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None], scale=scale)  # mask [1, H, T, 1 + T]


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.d_block_in, config.d_mlp, bias=config.bias)
        self.c_proj = nn.Linear(config.d_mlp, config.d_model, bias=config.bias)
        self.act = nn.GELU() if config.activation_type == "gelu" else nn.ReLU()
        where = config.locations()
        self.sparse_in, self.sparse_neuron, self.sparse_out = (AbsTopK(config.afrac if loc in where else None)
                                                               for loc in ("mlp_in", "mlp_neuron", "mlp_out"))
        self.hook_act_in, self.hook_post_act = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, d_block_in] -> [B, T, d_model]
        x = self.hook_act_in(self.sparse_in(x))
        neurons = self.hook_post_act(self.sparse_neuron(self.act(self.c_fc(x))))  # [B, T, d_mlp]
        return self.sparse_out(self.c_proj(neurons))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.ln_1, self.ln_2 = _norm(config, config.d_model), _norm(config, config.d_model)
        if config.d_pos_emb:
            self.ln_p1, self.ln_p2 = _norm(config, config.d_pos_emb), _norm(config, config.d_pos_emb)
        self.attn, self.mlp = Attention(config), MLP(config)
        where = config.locations()
        self.sparse_post_attn, self.sparse_post_mlp = (AbsTopK(config.afrac if loc in where else None)
                                                       for loc in ("resid_post_attn", "resid_post_mlp"))
        self.hook_resid_pre, self.hook_resid_mid, self.hook_resid_post = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_out, self.hook_mlp_out = HookPoint(), HookPoint()

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) if self.config.residual_activation_type == "relu" else x

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        # x: [B, T, d_model]; positions: [1, T, d_pos_emb] when position embeddings are concatenated
        x = self.hook_resid_pre(x)
        attn_in = self.ln_1(x) if positions is None else torch.cat([self.ln_1(x), self.ln_p1(positions).expand(
            x.shape[0], -1, -1)], dim=-1)
        x = self.sparse_post_attn(self._residual(x + self.hook_attn_out(self.attn(attn_in))))
        x = self.hook_resid_mid(x)
        mlp_in = self.ln_2(x) if positions is None else torch.cat([self.ln_2(x), self.ln_p2(positions).expand(
            x.shape[0], -1, -1)], dim=-1)
        x = self.sparse_post_mlp(self._residual(x + self.hook_mlp_out(self.mlp(mlp_in))))
        return self.hook_resid_post(x)


class SparseGPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        c = config
        modules: dict[str, nn.Module] = {"wte": nn.Embedding(c.vocab_size, c.d_model),
                                         "h": nn.ModuleList(Block(c) for _ in range(c.n_layer)),
                                         "ln_f": _norm(c, c.d_model)}
        if c.position_embedding or c.d_pos_emb:
            modules["wpe"] = nn.Embedding(c.block_size, c.d_pos_emb or c.d_model)
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.register_buffer("final_logits_bias", torch.zeros(c.vocab_size))
        if c.enable_bigram_table:
            self._make_bigram_table()
        self.hook_embed = HookPoint()
        self._initialise()
        if c.tied_unembed:
            self.lm_head.weight = self.transformer.wte.weight

    def _make_bigram_table(self) -> None:
        c = self.config
        if c.bigram_table_rank:
            if not c.learnable_bigram_table:
                raise ValueError("a low-rank bigram table must be learnable")
            self.bigram_left = nn.Parameter(torch.zeros(c.vocab_size, c.bigram_table_rank))
            self.bigram_right = nn.Parameter(torch.zeros(c.bigram_table_rank, c.vocab_size))
        elif c.learnable_bigram_table:
            self.bigram_table = nn.Parameter(torch.zeros(c.vocab_size, c.vocab_size))
        else:
            self.register_buffer("bigram_table", torch.zeros(c.vocab_size, c.vocab_size))

    def _initialise(self) -> None:
        """GPT-2's: normal(0, 0.02), residual-writing projections scaled down by sqrt(2 x layers), and one factor of
        a low-rank bigram table small but nonzero so the product gets gradient."""
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * self.config.n_layer))
            elif name.endswith("weight") and param.dim() == 2:
                nn.init.normal_(param, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(param)
        if self.config.bigram_table_rank:
            nn.init.normal_(self.bigram_left, std=0.02)
        if self.config.d_pos_emb and self.config.sinusoidal_cat_pos_emb:
            self._sinusoidal_positions()

    @torch.no_grad()
    def _sinusoidal_positions(self) -> None:
        """Fixed sines and cosines with periods log-spaced from 4 tokens to the context length, frozen."""
        wpe = self.transformer.wpe.weight  # [block_size, d_pos_emb]
        length, width = wpe.shape
        half = max(1, width // 2)
        periods = torch.logspace(math.log10(4.0), math.log10(max(4.0, float(length))), steps=half)
        angles = torch.arange(length, dtype=wpe.dtype)[:, None] * (2 * math.pi / periods)  # [T, half]
        table = torch.cat([angles.sin(), angles.cos()], dim=1)
        table = F.pad(table, (0, max(0, width - table.shape[1])))[:, :width]
        wpe.copy_(table)
        wpe.requires_grad_(False)

    def bigram_logits(self, idx: torch.Tensor) -> torch.Tensor | None:  # [B, T] -> [B, T, vocab]
        if not self.config.enable_bigram_table:
            return None
        if self.config.bigram_table_rank:
            return self.bigram_left[idx] @ self.bigram_right
        return self.bigram_table[idx]

    def hook_points(self) -> dict[str, HookPoint]:
        """Every named activation: ``embed``, per block ``{i}.resid_pre``, ``{i}.attn.act_in``, ``{i}.attn.q|k|v``
        ([B, T, n_head * d_head]), ``{i}.attn.z`` (heads' outputs before ``c_proj``), ``{i}.attn.out`` (what
        attention adds to the residual), ``{i}.resid_mid``, ``{i}.mlp.act_in``, ``{i}.mlp.post_act`` ([B, T,
        d_mlp]), ``{i}.mlp.out``, ``{i}.resid_post`` (all residual ones [B, T, d_model])."""
        points: dict[str, HookPoint] = {"embed": self.hook_embed}
        for i, block in enumerate(self.transformer.h):
            points.update({
                f"{i}.resid_pre": block.hook_resid_pre,
                f"{i}.attn.act_in": block.attn.hook_act_in,
                f"{i}.attn.q": block.attn.hook_q,
                f"{i}.attn.k": block.attn.hook_k,
                f"{i}.attn.v": block.attn.hook_v,
                f"{i}.attn.z": block.attn.hook_z,
                f"{i}.attn.out": block.hook_attn_out,
                f"{i}.resid_mid": block.hook_resid_mid,
                f"{i}.mlp.act_in": block.mlp.hook_act_in,
                f"{i}.mlp.post_act": block.mlp.hook_post_act,
                f"{i}.mlp.out": block.hook_mlp_out,
                f"{i}.resid_post": block.hook_resid_post,
            })
        return points

    def forward(self, idx: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T] token ids -> [B, T, vocab] logits; with ``at`` [B], only each row's logits at its position ``at``
        ([B, vocab]), which spares the unembedding and bigram table at every other position (most of a short
        prompt's cost when only its last token is scored)."""
        c = self.config
        time = idx.shape[1]
        if time > c.block_size:
            raise ValueError(f"context of {time} tokens is longer than the model's block size {c.block_size}")
        x = self.transformer.wte(idx)  # [B, T, d_model]
        positions = None
        if c.d_pos_emb:
            positions = self.transformer.wpe.weight[:time].unsqueeze(0)  # [1, T, d_pos_emb]
        elif c.position_embedding:
            x = x + self.transformer.wpe.weight[:time]
        x = self.hook_embed(x)
        for block in self.transformer.h:
            x = block(x, positions)
        if at is not None:
            rows = torch.arange(len(at), device=idx.device)
            x, idx = x[rows, at], idx[rows, at]  # [B, d_model], [B]
        logits = self.lm_head(self.transformer.ln_f(x)) + self.final_logits_bias
        bigram = self.bigram_logits(idx)
        return logits if bigram is None else logits + bigram

    def sparse_matrices(self) -> dict[str, nn.Parameter]:
        """The weight matrices that weight-sparse training keeps sparse: every linear layer's and the embeddings.
        The bigram table stays dense, as in the paper; norms and biases are vectors."""
        tied = self.config.tied_unembed
        return {name: param for name, param in self.named_parameters()
                if param.dim() == 2 and not name.startswith("bigram") and not (tied and name == "lm_head.weight")
                and name != "transformer.wpe.weight"}
