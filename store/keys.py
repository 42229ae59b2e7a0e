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
    # vision: the unit's activation as dataset examples rank it (its channel's spatial max) over every dataset image
    QUARTILES = "quartiles"  # [q25, q50, q75] of the spatial max over a seeded sample of the dataset's images
    EXAMPLES_N = "examples_n"  # how many dataset images the examples were ranked over
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
    # Quantile bands of its activation over all tokens, as OpenAI's circuit viewer shows them: {"measured_on": tokens
    # the edges were measured on (the pass's first batch), "pool": pool tokens the shares count, "bands": [{BandKey:
    # ...}], highest band first}. Each band's contexts are ``ExampleKind.BAND`` rows whose ``ContextKey.BAND`` is its
    # index in "bands". Absent from atlases made before bands (and bottom contexts) were measured.
    BANDS = "bands"


class ExampleKind(StrEnum):
    """``examples.kind``. A language-model example's ``source`` is a token window (see ``ContextKey``); a vision
    example's is an image crop (see ``CropKey``)."""

    TOP = "top"  # ranked by activation, highest first
    BOTTOM = "bottom"  # language: the most negative activations, lowest first (none for a unit never below 0)
    RANDOM = "random"  # drawn uniformly from the tokens where the unit is nonzero, in sample order
    # language: drawn uniformly from the tokens whose activation lies in a quantile band (``Stat.BANDS``), in band
    # order and within a band in sample order; ``ContextKey.BAND`` says which band
    BAND = "band"
    # vision: images drawn at random (seeded) from those whose activation lies between the quartiles of the unit's
    # activations over the dataset (``Stat.QUARTILES``), ranked by activation, highest first
    MIDDLE = "middle"


class CropKey(StrEnum):
    """Keys of a vision example's ``examples.source``. ``examples.asset_sha256`` is the whole dataset image as the model
    saw it (after resize and crop), stored once however many units use it; the crop is a box into it."""

    DATASET = "dataset"  # the dataset's name
    ITEM = "item"  # which image: its path relative to the dataset folder, or ``split/index`` of a built-in dataset
    CELL = "cell"  # [y, x]: the cell of the unit's activation grid where its spatial max is
    GRID = "grid"  # [h, w]: the size of that activation grid
    # [left, top, right, bottom] in pixels of the stored image, right and bottom exclusive: the part of the input the
    # unit's receptive field at ``cell`` sees, clipped to the image
    BOX = "box"


class ContextKey(StrEnum):
    """Keys of a token window in ``examples.source``."""

    TOKENS = "tokens"  # [str]: each token's text (``store.tokens``); joined they give the source text, but for
    # characters split across tokens, which show as their bytes
    VALUES = "values"  # [float]: the unit's activation at each token
    POSITION = "position"  # index in the window of the token the example is about (the maximum, for top)
    DOCUMENT = "document"  # the held-out file the window comes from
    OFFSET = "offset"  # the window's first token in the held-out sample
    BAND = "band"  # a band context's band: its index in ``Stat.BANDS``'s "bands"


class BandKey(StrEnum):
    """Keys of one quantile band in ``Stat.BANDS``: the tokens whose activation is in [low, high) (the top band:
    from low up to the unit's max, included), which the edges put between the top ``above`` and the top ``within``
    fractions of the unit's activations."""

    ABOVE = "above"  # fraction of tokens above the band: 0 for the top band
    WITHIN = "within"  # fraction of tokens at or above the band's low edge (0.001 for the top 0.1%)
    LOW = "low"  # the band's lowest activation: the quantile 1 - within of the tokens the edges were measured on
    HIGH = "high"  # the next band's low edge; None for the top band
    SHARE = "share"  # the fraction of the whole pass's random pool that fell in the band (what the edges give)


class EdgeKind(StrEnum):
    """``edges.kind``. A vision edge joins a unit to one of the previous layer's: its ``weight`` is the L2 norm of the
    [h, w] kernel between them (batchnorm folded in) signed by the kernel's sum, so |weight| ranks inputs the Circuits
    thread's way and the sign says excitatory or inhibitory on the whole; its asset is the kernel drawn in diverging
    colours (``render.vision_weights.kernel_image``). A unit keeps its strongest inputs and strongest outputs."""

    WEIGHT = "weight"  # a direct weight (for a language model: through the norm's gain where one sits between)
    # vision: the gradient of the later unit at its centre cell with respect to the earlier layer, with nonlinearities
    # replaced by identity (max pooling by average pooling), for layers joined by pooling, branches or residuals
    EXPANDED = "expanded_weight"
    # A circuit's edge (``edges.circuit_id`` set): a nonzero weight between two of its kept nodes, raw (the nodes are
    # the norms' outputs and the residual writes, so no gain sits between them)
    CIRCUIT = "circuit"


class LayerImageKind(StrEnum):
    """``layer_images.kind``: pictures of a whole vision layer (lucid's layer views)."""

    # maximises the mean of the layer's squared activations from a seeded random start; ``name`` is ""
    DEEPDREAM = "deepdream"
    # an input image optimised so the layer's activations align with those of the input (``source_sha256``); ``name``
    # is the input's file stem, so one layer can have caricatures of several inputs
    CARICATURE = "caricature"


class DatasetKey(StrEnum):
    """Keys of ``runs.config["dataset"]``: the images a vision run measured units on."""

    NAME = "name"  # the folder's name, or the built-in dataset's
    SOURCE = "source"  # the folder's absolute path, or ``built-in``
    IMAGES = "images"  # images read
    SKIPPED = "skipped"  # files that looked like images and could not be read (each named in the job's log)
    SHA256 = "sha256"  # over the images' relative paths and bytes in path order (built-in: over the tensor bytes)
    LAYOUT = "layout"  # "classes" (one subfolder per class, as torchvision's ImageFolder), "flat" or "built-in"


class CardKey(StrEnum):
    """Top-level keys of ``models.card`` (a language model's, and the vision keys below; TinyVision's card keeps its
    older free-form keys besides)."""

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
    # {"file": str, "sha256": str}; for registered and user models also {"url", "found" (where the file was found:
    # "--weights", "$ATLASCOPE_WEIGHTS_DIR", "torch hub cache", "Hugging Face cache", "downloaded"), "checked" (its
    # sha256 matched the publisher's), "format", "note"}; or {"random": true, "seed": int, "note": str}: an untrained
    # model (--random-weights), which every page and twin labels as such
    WEIGHTS = "weights"
    # vision: {"size", "resize", "value_range", "mean", "std", "channels": "RGB" | "BGR"}: how images became inputs
    INPUT = "input"
    # a model a user brought (--model): {"target": "package.module:factory" | "torchvision:NAME" | "timm:NAME",
    # "card_file": str | None, "layers": [{"name", "module", "units", "shape"}], "architecture": str (the module's
    # repr), "parameters": int}, so its pages say what it is without the user's code
    DEFINITION = "definition"
    # {"slug": Microscope's slug for this model}: one of Microscope's organisms, whose old links redirect here
    MICROSCOPE = "microscope"


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
    """Keys of ``circuits.params``. Losses are the paper's task loss (nats); a "pair" is one prompt with its two
    candidates, a "contrastive pair" two prompts from one seed, one per answer. The row's columns: ``loss`` is the
    calibrated task loss on the pruning pairs at the circuit's k (the best loss reached when not met), ``n_nodes`` and
    ``n_edges`` its size (both 0 when not met: a setting that finds nothing never reports any nodes as a circuit, and
    such a circuit has no ``circuit_nodes`` and no edges)."""

    # {"target": float, "met": bool (some k reached the target on the pruning pairs), "best_loss": float (the lowest
    #  calibrated loss any k reached), "best_k": int (the smallest k reaching it)}
    TARGET = "target"
    # How pruning ran: {"steps", "init": {"distribution": "normal", "mean", "std"}, "optimizer": {"name": "AdamW",
    #  "betas", "weight_decay", "eps", "schedule": "linear decay to 0"}, "clip" (per setting, L2), "target_loss",
    #  "calibration": {"fit", "optimizer": "L-BFGS", "steps"}, "seed", "prune_pairs" (contrastive pairs),
    #  "prune_prompts", "eval_pairs", "batch" (contrastive pairs per step), "ablation": "mean", "mean_windows",
    #  "null", "k_coef" and "lr" (the chosen setting's, or the closest one's when not met), "mean_tokens" (pretraining
    #  tokens the means were taken over), "nodes_total", "seconds" (the whole task, sweep, evidence and null)}
    CONFIG = "config"
    # [[k, task loss on the pruning pairs]], k ascending: every k the search evaluated for the chosen setting (the
    # closest one when not met), each loss read after that k's calibration
    CURVE = "curve"
    TRACE = "trace"  # [{"step", "task_loss", "kept"}]: the chosen setting's mask training, every tenth step
    # Held-out pairs (the evaluation split, never seen by pruning). {"pairs": int, "full": {"loss", "accuracy"} (the
    # model's own logits), "all_ablated" (every node mean-ablated, k = 0), and when met: "circuit_mean" (the circuit
    # alone, the rest mean-ablated), "circuit_zero" (the rest zero-ablated), "ablated_mean" (only the circuit
    # mean-ablated), each {"loss", "accuracy", "agreement" (fraction of pairs where it picks what the full model
    # picks)}; "beats_full": bool (circuit_mean's loss below full's by more than "interval"), "interval": float (the
    # 95% half-width, 1.96 sd / sqrt(pairs), of the per-pair loss difference full - circuit_mean)}. When not met only
    # "pairs", "full" and "all_ablated". circuit_mean, circuit_zero and all_ablated are read after a calibration
    # fitted on the pruning pairs in the same condition (CALIBRATION); full and ablated_mean are not calibrated.
    FAITHFULNESS = "faithfulness"
    # The null: the chosen (or closest) setting's pruning on a copy of the model whose weights are shuffled within
    # each matrix. {"method": "weight-shuffled", "seed": int, "met": bool, "k": int | None, "edges": int | None (when
    # met), "loss": float (the best calibrated loss it reached on the pruning pairs), "full": {"loss", "accuracy"} (the
    # shuffled model itself on the held-out pairs)}
    NULL = "null"
    # The settings tried, in order: {"settings": [{"k_coef", "lr", "met", "k": int | None, "edges": int | None (when
    #  met), "loss" (at k, or the best reached)}], "chosen": index of the smallest circuit met (by nodes, then edges)
    #  or None, "seconds": float (training and k search of every setting, and the chosen one's closer curve)}
    SWEEP = "sweep"
    # The candidates' logit difference (first candidate minus second) as read: scale * difference + shift, fitted by
    # L-BFGS on the pruning pairs. {"scale", "shift", "k": the k they were fitted at (the circuit's, or best_k when
    #  not met), "all_ablated": {"scale", "shift"} (at k = 0), and when met "circuit_zero": {"scale", "shift"}}
    CALIBRATION = "calibration"
    # A few held-out pairs: [{"tokens": [str] (the prompt as the model reads it), "correct": str, "wrong": str,
    #  "full": {"choice": str, "p_correct": float}, "circuit": {"choice": str, "p_correct": float} | None (None when
    #  not met; calibrated as circuit_mean)}]
    EXAMPLES = "examples"
    # The circuit's size at other task losses, from the same node order, so models that miss the target can still be
    # compared at a loss both reach: [{"target", "k", "edges"}] for each of SIZE_TARGETS some evaluated k meets (k: the
    # smallest such), tightest first
    SIZES = "sizes"
    # The two candidate logits' reads of the circuit's residual writes: [{"layer", "index", "token", "weight"}], the
    # unembedding row of the candidate through the final norm's gain, for each kept write channel ([] when not met)
    LOGITS = "logits"
    # What the circuit's page can show besides the circuit at its own k (``store.circuit_views``; only found
    # circuits have it): {"nodes": int (the whole order's), "ks": [int] (the k's a page offers, each on the curve,
    #  the circuit's among them), "listed_k": int (the order's weights are listed for every k up to it; beyond it,
    #  counted), "activation_nodes": int, "pairs": int, "pattern_pairs": int, "d_head": int, "groups": [str]}
    VIEWS = "views"
