"""Named keys for what the job writes and the server reads in JSON columns, so the two rooms share one spelling.

Vision units keep their channel statistics under ``DATASET_*``; language-model units keep per-token statistics under
the ``LM_*`` names below. Examples and edges use the kinds listed here. No torch, no SQLAlchemy: both sides import it.
"""

from __future__ import annotations

from enum import StrEnum


class ModelKind(StrEnum):
    """``models.kind``: what a model reads, which decides how its units are shown."""

    VISION = "vision"  # units are pictured: feature visualisations, image examples
    LANGUAGE = "language"  # units are measured on text: token contexts, logit effects


class Stat(StrEnum):
    """Keys of ``units.stats``."""

    # vision: the channel's spatial mean over held-out images
    DATASET_MEAN = "dataset_mean"
    DATASET_STD = "dataset_std"
    DATASET_MAX = "dataset_max"
    N = "n"  # how many inputs (images, or tokens for a language model) the statistics cover
    MEASURE = "measure"  # one sentence saying what was measured

    # language models: the unit's activation at every token of the held-out sample
    DENSITY = "density"  # fraction of tokens where the activation is nonzero
    MEAN = "mean"  # mean activation over all tokens
    MAX = "max"  # largest activation
    MIN = "min"  # smallest activation
    # {"edges": [b + 1 floats], "counts": [b ints]}: nonzero activations; values outside the edges are counted in
    # the first or last bin, and "clipped" says how many were.
    HISTOGRAM = "histogram"
    # {"promoted": [{"token", "id", "value"}], "suppressed": [...]}: the unembedding (through the final norm's gain)
    # applied to the unit's output direction; only units that write to the residual stream have them.
    LOGIT_EFFECTS = "logit_effects"
    TOP_TOKENS = "top_tokens"  # the tokens its top contexts peak on, commonest first: [str]


class ExampleKind(StrEnum):
    """``examples.kind``. A language-model example's ``source`` is a token window (see ``ContextKey``)."""

    TOP = "top"  # ranked by activation, highest first
    RANDOM = "random"  # drawn uniformly from the tokens where the unit is nonzero, in sample order


class ContextKey(StrEnum):
    """Keys of a token window in ``examples.source``."""

    TOKENS = "tokens"  # [str]: each token's text; joined they give the source text
    VALUES = "values"  # [float]: the unit's activation at each token
    POSITION = "position"  # index in the window of the token the example is about (the maximum, for top)
    DOCUMENT = "document"  # the held-out file the window comes from
    OFFSET = "offset"  # the window's first token in the held-out sample


class EdgeKind(StrEnum):
    """``edges.kind``."""

    WEIGHT = "weight"  # a direct weight (for a language model: through the norm's gain where one sits between)
    EXPANDED = "expanded_weight"  # product of weights through non-linearities replaced by identity
    # A circuit's edge (``edges.circuit_id`` set): a nonzero weight between two of its kept nodes, raw (the nodes are
    # the norms' outputs and the residual writes, so no gain sits between them)
    CIRCUIT = "circuit"


class CardKey(StrEnum):
    """Top-level keys of a language model's ``models.card`` (vision cards keep their older free-form keys)."""

    ARCHITECTURE = "architecture"  # the model's config: n_layer, d_model, n_head, d_head, d_mlp, afrac, ...
    # {"weights": "sparse" | "dense", "target": float | None, "nonzero_fraction": float (all sparse matrices),
    #  "matrices": {param name: {"shape": [out, in], "nonzero": int, "fraction": float}}}
    SPARSITY = "sparsity"
    # {"loss": nats per token, "tokens": int, "corpus_sha256": str, "files": int}
    HELDOUT = "heldout"
    # {task name: {"accuracy": float, "loss": float, "pairs": int, "chance": 0.5}}
    TASKS = "tasks"
    # {"command": str, "seconds": float, "steps": int, "tokens": int, "threads": int}
    TRAINING = "training"
    # {"name": str, "vocab_size": int, "sha256": str}
    TOKENIZER = "tokenizer"
    WEIGHTS = "weights"  # {"file": str, "sha256": str}


class LayerKind(StrEnum):
    """``layers.kind`` of a language model's layers; the layer's name is ``{block}.{kind}`` (``0.mlp.post_act``)."""

    RESID_PRE = "resid_pre"  # the residual stream a block reads (block 0: the embeddings)
    ATTN_IN = "attn.act_in"  # attention's residual read channels: resid_pre through the norm
    ATTN_Q = "attn.q"
    ATTN_K = "attn.k"
    ATTN_V = "attn.v"
    ATTN_OUT = "attn.out"  # attention's residual write channels: what it adds to the stream
    RESID_MID = "resid_mid"  # between a block's attention and its MLP
    MLP_IN = "mlp.act_in"  # the MLP's residual read channels
    MLP = "mlp.post_act"
    MLP_OUT = "mlp.out"  # the MLP's residual write channels
    RESID_POST = "resid_post"  # after the last block: what the unembedding reads


# The layers whose channels pruning masks (the paper's nodes), in forward order within a block
CIRCUIT_NODE_KINDS = (LayerKind.ATTN_IN, LayerKind.ATTN_Q, LayerKind.ATTN_K, LayerKind.ATTN_V, LayerKind.ATTN_OUT,
                      LayerKind.MLP_IN, LayerKind.MLP, LayerKind.MLP_OUT)


# The task losses at which every circuit's size is also recorded (CircuitKey.SIZES)
SIZE_TARGETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


class CircuitKey(StrEnum):
    """Keys of ``circuits.params``. Losses are the paper's task loss (nats); "pairs" are contrastive prompts."""

    # {"target" : float, "met": bool}: whether some k reached the target on the pruning pairs
    TARGET = "target"
    # {"steps", "lr", "k_coef", "init", "seed", "batch", "prune_pairs", "eval_pairs", "ablation": "mean",
    #  "mean_tokens": int (pretraining tokens the means were taken over), "nodes_total": int, "seconds": float}
    CONFIG = "config"
    CURVE = "curve"  # [[k, task loss on the pruning pairs]], k ascending: every k the search evaluated
    TRACE = "trace"  # [{"step", "task_loss", "kept"}]: mask training, every tenth step
    # Held-out pairs. {"pairs": int, "full": {"loss", "accuracy"}, and for each of "circuit_mean" (the circuit alone,
    # the rest mean-ablated), "circuit_zero" (the rest zero-ablated), "ablated_mean" (only the circuit mean-ablated):
    # {"loss", "accuracy", "agreement" (fraction of pairs where it picks what the full model picks)}}
    FAITHFULNESS = "faithfulness"
    # A few held-out pairs: [{"tokens": [str] (the prompt as the model reads it), "correct": str, "wrong": str,
    #  "full": {"choice": str, "p_correct": float}, "circuit": {"choice": str, "p_correct": float}}]
    EXAMPLES = "examples"
    # The circuit's size at other task losses, from the same node order, so models that miss the target can still be
    # compared at a loss both reach: [{"target", "k", "edges"}] for each of SIZE_TARGETS some evaluated k meets (k: the
    # smallest such), tightest first
    SIZES = "sizes"
    # The two candidate logits' reads of the circuit's residual writes: [{"layer", "index", "token", "weight"}], the
    # unembedding row of the candidate through the final norm's gain, for each kept write channel
    LOGITS = "logits"

