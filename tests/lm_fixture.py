"""A small language-model atlas built by hand, as the LM precompute job will write it (``store.keys``), so the LM
pages can be tested without torch, a tokenizer or a trained model.

The model "fixture-lm" has 2 blocks, d_model 8, 4 query/key/value channels per head times 2 heads, and d_mlp 16, so
its layers are, per block in forward order, ``{0,1}.resid_pre``, ``.attn.act_in``, ``.attn.q``, ``.attn.k``,
``.attn.v``, ``.attn.out``, ``.resid_mid``, ``.mlp.act_in``, ``.mlp.post_act``, ``.mlp.out``, then ``1.resid_post``.
Every unit has a row; a few are filled in full:

- ``NEURON`` (an MLP neuron): 20 top contexts stored out of rank order, ``BOTTOM_VALUES`` most negative ones, 5
  random ones, two contexts in each of its quantile bands (``BANDS``), a histogram, logit effects,
  and weights from three residual channels and to two. Its top context holds a newline, quotes, ``<``, non-ASCII
  text and a negative activation.
- ``CHANNEL`` (a residual channel): contexts, logit effects, and more edges than a vision page would list (30 out).
  Its top context (``ODD_TOKENS``) and the tokens it peaks on hold what a byte-level tokenizer's tokens can be: a
  character split across tokens (each stored as its bytes, ``store.tokens``), control and invisible characters, and
  whitespace-only tokens; so do the logit effects every unit shares.
- ``QUERY`` (an attention query channel): contexts and statistics but no logit effects, as the job writes them; it is
  never negative, so its quantile bands (``BANDS``, the second one empty) come without bottom contexts.
- the other units of ``NEURON``'s layer: density, max and top tokens in an order unlike their index, except
  ``UNMEASURED`` (not measured yet) and ``DEAD`` (measured, never fires: an empty histogram).

Its task circuits record every piece of evidence (``evidence``: the target with the best loss reached, held-out
scores with the all-ablated baseline and the beats-full flag, a weight-shuffled null, the sweep of settings, the
calibration):

- ``TASK`` (``QUOTE_NODES``, ``QUOTE_EDGES``, ``QUOTE_LOGITS``): found at the target, faithful on held-out pairs, the
  full model solves the task, the null finds nothing; it keeps ``NEURON`` and ``QUERY``, the rest unmeasured;
- ``FAITHLESS_TASK``: found on the pruning pairs but above the target held out, while the full model does not solve
  the task and the circuit alone beats it beyond the interval; its null finds a circuit too. It keeps ``NEURON``,
  with an edge the quote circuit also has;
- ``NOT_FOUND_TASK``: the full model solves it, but no k meets the target: no nodes, no edges, the best loss reached.

The model "fixture-lm-dense" has the same layers and a dense card (``DENSE_CARD``), no statistics, and circuits for
the three tasks: ``TASK`` keeps every node of its blocks with every weight between them (``DENSE_EDGES``, more than a
page draws), found at the target (above it held out); ``FAITHLESS_TASK`` is not found and its full model does not
solve the task; ``NOT_FOUND_TASK`` is found (``DENSE_SET_NODES``). Together the two models make a (dense, sparse)
pair on each task's comparison page: both found, both full models missing the target, and one circuit not found.

``build_large`` writes another atlas: one TinyLM-shaped model with a 1,500-node circuit, for the page's bench.

Use the fixtures by importing them into a test module: ``from tests.lm_fixture import lm_atlas, lm_server``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from store import Atlas
from store.keys import (CIRCUIT_NODE_KINDS, BandKey, CardKey, CircuitKey, ContextKey, EdgeKind, ExampleKind, LayerKind,
                        Stat)
from store.schema import Circuit, CircuitNode, Edge, Example, Layer, Model, Unit
from tests.conftest import serving

SLUG = "fixture-lm"
N_BLOCKS, D_MODEL, D_MLP = 2, 8, 16
NEURON = (f"0.{LayerKind.MLP}", 3)
CHANNEL = (f"1.{LayerKind.RESID_PRE}", 4)
QUERY = (f"1.{LayerKind.ATTN_Q}", 2)
UNMEASURED = (f"0.{LayerKind.MLP}", 15)
DEAD = (f"0.{LayerKind.MLP}", 5)

BLOCK = (LayerKind.RESID_PRE, LayerKind.ATTN_IN, LayerKind.ATTN_Q, LayerKind.ATTN_K, LayerKind.ATTN_V,
         LayerKind.ATTN_OUT, LayerKind.RESID_MID, LayerKind.MLP_IN, LayerKind.MLP, LayerKind.MLP_OUT)
# The neuron's top context: code with a newline (and indentation), quotes, an HTML-special "<", non-ASCII text, and a
# negative activation at "else"; the neuron peaks on " <".
KNOWN_TOKENS = ["def", " clamp", "(", "x", "):", "\n", "    ", "if", " x", " <", " 0", ":", " return", ' "', "né",
                "λ", '"', "\n", "    ", "else", ":", " return", " x"]
KNOWN_PEAK = KNOWN_TOKENS.index(" <")
KNOWN_NEGATIVE = KNOWN_TOKENS.index("else")
KNOWN_DOCUMENT = "lib/clamp.py"
TOP_MAX = 4.5
# The channel's top context: "Ç" split across two tokens (its bytes, as the job stores them), a control character
# (U+0013), a zero-width space, whitespace-only tokens; it peaks on the split character's first byte.
ODD_TOKENS = ["x", " =", " '", "<0xC3>", "<0x87>", "'", " +", " '", "\x13", "\u200b", "'", "\n", "    ", "y"]
ODD_PEAK = ODD_TOKENS.index("<0xC3>")
ODD_TOP_TOKENS = [" x", "λ", "<0xC5>", "\x0f", "    "]

CARD = {
    CardKey.ARCHITECTURE: {"n_layer": N_BLOCKS, "d_model": D_MODEL, "n_head": 2, "d_head": 4, "d_mlp": D_MLP,
                           "vocab_size": 2048, "block_size": 256, "afrac": 0.25, "afrac_loctypes": "attn_in,mlp_neuron"},
    CardKey.SPARSITY: {"weights": "sparse", "target": 0.0625, "nonzero_fraction": 0.0612, "matrices": {
        "blocks.0.mlp.c_fc.weight": {"shape": [D_MLP, D_MODEL], "nonzero": 8, "fraction": 0.0625},
        "blocks.0.attn.c_attn.weight": {"shape": [24, D_MODEL], "nonzero": 11, "fraction": 0.0573},
    }},
    CardKey.HELDOUT: {"loss": 2.3456, "tokens": 262144, "corpus_sha256": "ab" * 32, "files": 412},
    CardKey.TASKS: {"quote_closing": {"accuracy": 0.93, "loss": 0.21, "pairs": 500, "chance": 0.5},
                    "bracket_counting": {"accuracy": 0.71, "loss": 0.55, "pairs": 500, "chance": 0.5}},
    CardKey.TRAINING: {"command": "python -m precompute.lm.train --sparse", "seconds": 1534.0, "steps": 4000,
                       "tokens": 16384000, "threads": 2},
    CardKey.TOKENIZER: {"name": "fixture_bpe_2k", "vocab_size": 2048, "sha256": "cd" * 32},
    CardKey.WEIGHTS: {"file": "fixture-lm.pt", "sha256": "ef" * 32},
}
HISTOGRAM = {"edges": [-0.25 + 0.5 * i for i in range(11)], "counts": [3, 40, 25, 12, 8, 5, 3, 2, 1, 1],
             "clipped": 2}
LOGIT_EFFECTS = {
    "promoted": [{"token": " <", "id": 301, "value": 0.82}, {"token": "\n", "id": 3, "value": 0.51},
                 {"token": "λ", "id": 1999, "value": 0.2}],
    "suppressed": [{"token": " ", "id": 4, "value": -0.61}, {"token": "\t", "id": 5, "value": -0.3},
                   {"token": "<0xBC>", "id": 121, "value": -0.2}, {"token": "\x13", "id": 208, "value": -0.1}],
}


# Quantile bands as the job stores them (``Stat.BANDS``), and the neuron's most negative activations, lowest first
BANDS = {"measured_on": 4096, "pool": 16384, "bands": [
    {BandKey.ABOVE: above, BandKey.WITHIN: within, BandKey.LOW: low, BandKey.HIGH: high, BandKey.SHARE: share}
    for above, within, low, high, share in ((0.0, 0.001, 3.9, None, 0.0011), (0.001, 0.01, 2.75, 3.9, 0.0094),
                                            (0.01, 0.1, 0.5, 2.75, 0.087), (0.1, 0.5, 0.0, 0.5, 0.41))]}
BOTTOM_VALUES = [-0.17, -0.12, -0.05]


DENSE_SLUG = "fixture-lm-dense"
# its held-out loss ends in 0 at the third decimal: shown 2.350 beside the sparse model's 2.346, not 2.35
DENSE_CARD = {**CARD, CardKey.SPARSITY: {"weights": "dense", "target": None, "nonzero_fraction": 1.0},
              CardKey.HELDOUT: {**CARD[CardKey.HELDOUT], "loss": 2.35},
              CardKey.WEIGHTS: {"file": "fixture-lm-dense.pt", "sha256": "fe" * 32}}

# The circuits. Node layers by kind, in block 0 and 1
ATTN_IN, Q, K, V, ATTN_OUT = (f"{{}}.{kind}" for kind in CIRCUIT_NODE_KINDS[:5])
MLP_IN, MLP_OUT = f"{{}}.{LayerKind.MLP_IN}", f"{{}}.{LayerKind.MLP_OUT}"
TASK, FAITHLESS_TASK = "single_double_quote", "bracket_counting"
TARGET = 0.15
CANDIDATES = ('"', "'")
# fixture-lm's quote circuit: unit -> tau. Residual links it implies: 0.attn.out 5 -> 0.mlp.act_in 5 and
# 1.mlp.act_in 5; 0.mlp.out 6 -> 1.attn.act_in 6; and the embedding's channels 1, 4, 5, 6 to every read of them.
QUOTE_NODES = {
    (ATTN_IN.format(0), 1): 0.9, (ATTN_IN.format(0), 4): 0.7, (Q.format(0), 2): 0.2, (K.format(0), 2): 0.8,
    (V.format(0), 2): 0.85, (ATTN_OUT.format(0), 5): 0.6, (MLP_IN.format(0), 1): 0.3, (MLP_IN.format(0), 5): 0.75,
    NEURON: 0.95, (MLP_OUT.format(0), 6): 0.5, (ATTN_IN.format(1), 6): 0.4, QUERY: 0.35,
    (MLP_IN.format(1), 5): 0.45, (f"1.{LayerKind.MLP}", 7): 0.65, (MLP_OUT.format(1), 0): 0.55,
}
QUOTE_EDGES = [
    ((ATTN_IN.format(0), 1), (K.format(0), 2), 0.8), ((ATTN_IN.format(0), 1), (Q.format(0), 2), 0.3),
    ((ATTN_IN.format(0), 4), (V.format(0), 2), -0.6), ((V.format(0), 2), (ATTN_OUT.format(0), 5), 1.1),
    ((MLP_IN.format(0), 5), NEURON, 0.9), ((MLP_IN.format(0), 1), NEURON, -0.5), (NEURON, (MLP_OUT.format(0), 6), 0.7),
    ((ATTN_IN.format(1), 6), QUERY, 0.45), ((MLP_IN.format(1), 5), (f"1.{LayerKind.MLP}", 7), 1.3),
    ((f"1.{LayerKind.MLP}", 7), (MLP_OUT.format(1), 0), -0.8),
]
QUOTE_RESIDUAL = {  # (src layer, dst layer, channel), the embedding's as 0.resid_pre
    (ATTN_OUT.format(0), MLP_IN.format(0), 5), (ATTN_OUT.format(0), MLP_IN.format(1), 5),
    (MLP_OUT.format(0), ATTN_IN.format(1), 6), (f"0.{LayerKind.RESID_PRE}", ATTN_IN.format(0), 1),
    (f"0.{LayerKind.RESID_PRE}", ATTN_IN.format(0), 4), (f"0.{LayerKind.RESID_PRE}", MLP_IN.format(0), 1),
    (f"0.{LayerKind.RESID_PRE}", MLP_IN.format(0), 5), (f"0.{LayerKind.RESID_PRE}", ATTN_IN.format(1), 6),
    (f"0.{LayerKind.RESID_PRE}", MLP_IN.format(1), 5),
}
QUOTE_LOGITS = [{"layer": layer, "index": index, "token": token, "weight": weight}
                for (layer, index), weights in (((ATTN_OUT.format(0), 5), (1.4, -1.2)),
                                                ((MLP_OUT.format(0), 6), (-0.3, 0.5)),
                                                ((MLP_OUT.format(1), 0), (2.1, -1.9)))
                for token, weight in zip(CANDIDATES, weights)]
QUOTE_CURVE = [[1, 0.69], [2, 0.52], [4, 0.4], [8, 0.24], [12, 0.17], [14, 0.16], [15, 0.14], [16, 0.13], [32, 0.09],
               [64, 0.06]]
# Held-out pairs: prompts with quotes, "<" and a newline; the circuit gets the second one wrong
QUOTE_EXAMPLES = [
    {"tokens": ["x", " =", ' "', "a", "<", "b"], "correct": '"', "wrong": "'",
     "full": {"choice": '"', "p_correct": 0.93}, "circuit": {"choice": '"', "p_correct": 0.81}},
    {"tokens": ["print", "(", "'", "hi", "\n"], "correct": "'", "wrong": '"',
     "full": {"choice": "'", "p_correct": 0.77}, "circuit": {"choice": '"', "p_correct": 0.42}},
]
QUOTE_FAITHFULNESS = {"pairs": 400, "full": {"loss": 0.12, "accuracy": 0.95},
                      "circuit_mean": {"loss": 0.14, "accuracy": 0.91, "agreement": 0.93},
                      "circuit_zero": {"loss": 0.55, "accuracy": 0.7, "agreement": 0.71},
                      "ablated_mean": {"loss": 0.74, "accuracy": 0.49, "agreement": 0.5},
                      "all_ablated": {"loss": 0.69, "accuracy": 0.5, "agreement": 0.52},
                      "beats_full": False, "interval": 0.031}
QUOTE_CONFIG = {"steps": 400, "lr": 0.01, "k_coef": 0.0001, "init": 1.0, "seed": 0, "batch": 32, "prune_pairs": 256,
                "eval_pairs": 400, "ablation": "mean", "mean_tokens": 65536, "nodes_total": 288, "seconds": 84.5}
# The same pruning on a weight-shuffled copy of the model: it finds nothing at the target
QUOTE_NULL = {"method": "weight-shuffled", "seed": 7, "met": False, "k": None, "edges": None, "loss": 0.612,
              "full": {"loss": 0.71, "accuracy": 0.49}}
QUOTE_SWEEP = {"settings": [{"k_coef": 1e-4, "lr": 0.05, "met": True, "k": 18, "edges": 13, "loss": 0.147},
                            {"k_coef": 3e-4, "lr": 0.05, "met": True, "k": 15, "edges": 10, "loss": 0.14},
                            {"k_coef": 1e-3, "lr": 0.05, "met": False, "k": None, "edges": None, "loss": 0.29}],
               "chosen": 1, "seconds": 251.0}
QUOTE_CALIBRATION = {"scale": 1.25, "shift": -0.03, "k": 15, "all_ablated": {"scale": 0.2, "shift": 0.01},
                     "circuit_zero": {"scale": 0.9, "shift": 0.1}}
# bracket_counting: met on the pruning pairs, but unfaithful on held-out ones, and the full model does not do the task
# (held-out loss above the target): the circuit alone beats it by more than the interval, and so does the null
FAITHLESS_NODES = {(MLP_IN.format(0), 5): 0.5, NEURON: 0.3, (MLP_OUT.format(0), 6): 0.2}
FAITHLESS_EDGES = [((MLP_IN.format(0), 5), NEURON, 0.9), (NEURON, (MLP_OUT.format(0), 6), 0.6)]
FAITHLESS_HELDOUT = 0.41
FAITHLESS_FULL = {"loss": 0.55, "accuracy": 0.71}
FAITHLESS_INTERVAL = 0.06
FAITHLESS_NULL = {"method": "weight-shuffled", "seed": 7, "met": True, "k": 5, "edges": 3, "loss": 0.14,
                  "full": {"loss": 0.7, "accuracy": 0.5}}
# set_or_string: the full model solves it, but no k of the sparse model's order meets the target: not found, with the
# best loss reached; the dense model's is found
NOT_FOUND_TASK = "set_or_string"
NOT_FOUND_BEST = (0.31, 40)  # best loss, at k
NOT_FOUND_FULL = {"loss": 0.09, "accuracy": 0.97}
NOT_FOUND_CURVE = [[1, 0.69], [10, 0.5], [40, 0.31], [80, 0.33], [288, 0.35]]
DENSE_SET_NODES = {(MLP_IN.format(0), k): 0.5 for k in range(4)} | {(f"0.{LayerKind.MLP}", k): 0.4 for k in range(6)}
DENSE_SET_EDGES = [((MLP_IN.format(0), 0), (f"0.{LayerKind.MLP}", k), 0.1 * (k + 1)) for k in range(6)]
# The dense quote circuit keeps every node and meets the target; held out, it misses it
DENSE_LOSS, DENSE_HELDOUT = 0.149, 0.35
# bracket_counting of the dense model: its full model does not solve the task, and pruning finds nothing
DENSE_BRACKET_FULL = {"loss": 0.6, "accuracy": 0.62}
DENSE_BRACKET_BEST = (0.5, 100)
# Sizes at other losses, as the job records them from each curve (the smallest k at each loss, its edges)
QUOTE_SIZES = [{"target": 0.15, "k": 15, "edges": 10}, {"target": 0.2, "k": 12, "edges": 8},
               {"target": 0.3, "k": 8, "edges": 5}, {"target": 0.4, "k": 4, "edges": 2}]
DENSE_SIZES = [{"target": 0.15, "k": 144, "edges": 1024}, {"target": 0.3, "k": 128, "edges": 900},
               {"target": 0.5, "k": 64, "edges": 410}]
NOT_FOUND_SIZES = [{"target": 0.4, "k": 10, "edges": 12}, {"target": 0.5, "k": 10, "edges": 12}]
DENSE_SET_SIZES = [{"target": 0.15, "k": 10, "edges": 6}, {"target": 0.4, "k": 6, "edges": 5}]


def evidence(met: bool, k: int, edges: int, loss: float, full: dict | None = None, heldout: float | None = None,
             beats_full: bool = False, interval: float = 0.031, null: dict | None = None,
             best: tuple[float, int] | None = None) -> dict:
    """The evidence keys of a circuit's params as the job writes them: the target with the best loss reached, the
    held-out scores (only the full model's and the all-ablated baseline when no circuit was found), the null, the
    sweep of settings and the calibration."""
    full = full or QUOTE_FAITHFULNESS["full"]
    best_loss, best_k = best or (loss, k)
    if met:
        faithfulness = {**QUOTE_FAITHFULNESS, "full": full, "beats_full": beats_full, "interval": interval,
                        "circuit_mean": {**QUOTE_FAITHFULNESS["circuit_mean"],
                                         "loss": QUOTE_FAITHFULNESS["circuit_mean"]["loss"] if heldout is None
                                         else heldout}}
    else:
        faithfulness = {key: QUOTE_FAITHFULNESS[key] for key in ("pairs", "all_ablated")} | {"full": full}
    settings = [{**s, "k": k if i == 1 else s["k"], "edges": edges if i == 1 else s["edges"],
                 "loss": loss if i == 1 else s["loss"]} if met else {**s, "met": False, "k": None, "edges": None}
                for i, s in enumerate(QUOTE_SWEEP["settings"])]
    return {CircuitKey.TARGET: {"target": TARGET, "met": met, "best_loss": best_loss, "best_k": best_k},
            CircuitKey.FAITHFULNESS: faithfulness, CircuitKey.NULL: null or QUOTE_NULL,
            CircuitKey.SWEEP: {**QUOTE_SWEEP, "settings": settings, "chosen": 1 if met else None},
            CircuitKey.CALIBRATION: {**QUOTE_CALIBRATION, "k": best_k} if met else
            {key: QUOTE_CALIBRATION[key] for key in ("scale", "shift", "all_ablated")} | {"k": best_k}}


def dense_nodes() -> list[tuple[str, int]]:
    """Every node of fixture-lm-dense's blocks: its quote circuit keeps them all."""
    return [(f"{block}.{kind}", i) for block in range(N_BLOCKS) for kind in CIRCUIT_NODE_KINDS
            for i in range(D_MLP if kind == LayerKind.MLP else D_MODEL)]


def dense_edges() -> list[tuple[tuple[str, int], tuple[str, int], float]]:
    """Every weight between them: reads to q, k and v, v to attention's writes, reads to neurons, neurons to writes."""
    rng = random.Random(1)
    pairs = [((ATTN_IN.format(b), i), (qkv.format(b), j)) for b in range(N_BLOCKS) for i in range(D_MODEL)
             for qkv in (Q, K, V) for j in range(D_MODEL)]
    pairs += [((V.format(b), i), (ATTN_OUT.format(b), j)) for b in range(N_BLOCKS) for i in range(D_MODEL)
              for j in range(D_MODEL)]
    pairs += [((MLP_IN.format(b), i), (f"{b}.{LayerKind.MLP}", j)) for b in range(N_BLOCKS) for i in range(D_MODEL)
              for j in range(D_MLP)]
    pairs += [((f"{b}.{LayerKind.MLP}", i), (MLP_OUT.format(b), j)) for b in range(N_BLOCKS) for i in range(D_MLP)
              for j in range(D_MODEL)]
    return [(src, dst, round(rng.choice((-1, 1)) * rng.uniform(0.01, 1), 4)) for src, dst in pairs]


DENSE_EDGES = dense_edges()

def layer_names() -> list[tuple[str, str, int]]:
    """(name, kind, n_units) of every layer, in forward order."""
    layers = [(f"{block}.{kind}", kind, D_MLP if kind == LayerKind.MLP else D_MODEL)
              for block in range(N_BLOCKS) for kind in BLOCK]
    return layers + [(f"{N_BLOCKS - 1}.{LayerKind.RESID_POST}", LayerKind.RESID_POST, D_MODEL)]


def window(rng: random.Random, peak: float, document: str, offset: int) -> dict:
    """A random window of 32 tokens peaking at ``peak`` somewhere in it."""
    tokens = [rng.choice(["x", " =", " 1", "\n", "    ", "(", ")", " if", ":", " for", " in", "_"]) for _ in range(32)]
    values = [0.0 if rng.random() < 0.7 else round(rng.uniform(0, peak / 2), 3) for _ in tokens]
    position = rng.randrange(len(tokens))
    values[position] = peak
    return {ContextKey.TOKENS: tokens, ContextKey.VALUES: values, ContextKey.POSITION: position,
            ContextKey.DOCUMENT: document, ContextKey.OFFSET: offset}


def known_window() -> dict:
    values = [0.0] * len(KNOWN_TOKENS)
    values[KNOWN_PEAK], values[KNOWN_PEAK - 1], values[KNOWN_NEGATIVE] = TOP_MAX, 1.25, -0.17
    return {ContextKey.TOKENS: KNOWN_TOKENS, ContextKey.VALUES: values, ContextKey.POSITION: KNOWN_PEAK,
            ContextKey.DOCUMENT: KNOWN_DOCUMENT, ContextKey.OFFSET: 1000}


def odd_window() -> dict:
    values = [round(0.3 * i, 1) for i in range(len(ODD_TOKENS))]
    values[ODD_PEAK] = TOP_MAX
    return {ContextKey.TOKENS: ODD_TOKENS, ContextKey.VALUES: values, ContextKey.POSITION: ODD_PEAK,
            ContextKey.DOCUMENT: "lib/odd.py", ContextKey.OFFSET: 2000}


def examples(rng: random.Random, unit: Unit, n_top: int, n_random: int, first: dict | None = None) -> list[Example]:
    """Top contexts ranked 0.. by falling activation (added in shuffled order, so pages must sort by rank), the
    first one ``first`` if given, and random ones."""
    top = [(rank, TOP_MAX - 0.2 * rank) for rank in range(n_top)]
    rng.shuffle(top)
    rows = [Example(unit_id=unit.id, kind=ExampleKind.TOP, rank=rank, activation=peak,
                    source=first if first and rank == 0 else window(rng, peak, f"lib/m{rank}.py", 64 * rank))
            for rank, peak in top]
    rows += [Example(unit_id=unit.id, kind=ExampleKind.RANDOM, rank=rank, activation=peak,
                     source=window(rng, peak, f"lib/r{rank}.py", 5000 + 64 * rank))
             for rank, peak in enumerate(round(rng.uniform(0.1, 1.0), 3) for _ in range(n_random))]
    return rows


def negative_side(rng: random.Random, unit: Unit, bands: dict, bottom: list[float], skip: int = -1) -> list[Example]:
    """Bottom contexts at ``bottom`` and two contexts inside each band of ``bands`` but band ``skip``, as the job
    stores them (band rows ranked on across bands, each naming its band)."""
    rows = [Example(unit_id=unit.id, kind=ExampleKind.BOTTOM, rank=rank, activation=low,
                    source=window(rng, low, f"lib/b{rank}.py", 9000 + 64 * rank)) for rank, low in enumerate(bottom)]
    inside = [(index, round(band[BandKey.LOW] + 0.01 * (1 + i), 3)) for index, band in enumerate(bands["bands"])
              if index != skip for i in range(2)]
    rows += [Example(unit_id=unit.id, kind=ExampleKind.BAND, rank=rank, activation=value,
                     source={**window(rng, value, f"lib/q{rank}.py", 12000 + 64 * rank), ContextKey.BAND: band})
             for rank, (band, value) in enumerate(inside)]
    return rows


def stats(density: float, top: float, top_tokens: list[str], effects: bool) -> dict:
    full = {Stat.DENSITY: density, Stat.MEAN: round(density * top / 4, 4), Stat.MAX: top, Stat.MIN: -0.17,
            Stat.N: 262144, Stat.MEASURE: "activation at every token of 262,144 held-out tokens",
            Stat.HISTOGRAM: HISTOGRAM, Stat.TOP_TOKENS: top_tokens}
    return {**full, Stat.LOGIT_EFFECTS: LOGIT_EFFECTS} if effects else full


def layer_stats(index: int) -> dict:
    """The neuron layer's other units: densities and maxima that do not follow the index."""
    if (f"0.{LayerKind.MLP}", index) == DEAD:  # nothing to count: empty bins, and no "clipped"
        return {**stats(0.0, 0.0, [], effects=True), Stat.HISTOGRAM: {"edges": [], "counts": []}}
    return stats(round(((index * 7) % 16 + 1) / 100, 4), round(((index * 5) % 16 + 1) / 4, 3), ["x", " ="],
                 effects=True)


def add_model(session: Session, slug: str, title: str, description: str, card: dict) -> tuple[Model, dict]:
    """A language model with every layer and a row for every unit, unmeasured; its units by (layer, index)."""
    model = Model(slug=slug, title=title, kind="language", description=description, source="tests/lm_fixture.py",
                  card=card)
    session.add(model)
    session.flush()
    units: dict[tuple[str, int], Unit] = {}
    for position, (name, kind, n) in enumerate(layer_names()):
        layer = Layer(model_id=model.id, name=name, position=position, kind=kind, n_units=n, shape=[n],
                      description=f"{kind} of block {name.partition('.')[0]}")
        session.add(layer)
        session.flush()
        for index in range(n):
            units[name, index] = Unit(layer_id=layer.id, index=index, stats={})
    session.add_all(units.values())
    session.flush()
    return model, units


def add_circuit(session: Session, model: Model, units: dict, task: str, nodes: dict, edges: list, loss: float,
                params: dict) -> None:
    """A circuit as the job saves it: its row, its kept nodes with their tau, and its edges (none when not found)."""
    circuit = Circuit(model_id=model.id, slug=task, task=task, target_loss=TARGET, loss=loss, n_nodes=len(nodes),
                      n_edges=len(edges), params={CircuitKey.CONFIG: QUOTE_CONFIG, **params})
    session.add(circuit)
    session.flush()
    session.add_all(CircuitNode(circuit_id=circuit.id, unit_id=units[node].id, score=tau)
                    for node, tau in nodes.items())
    session.add_all(Edge(src_unit_id=units[src].id, dst_unit_id=units[dst].id, kind=EdgeKind.CIRCUIT,
                         circuit_id=circuit.id, weight=weight) for src, dst, weight in edges)


def build(root: Path) -> Path:
    """Write the fixture atlas into ``root`` (a new directory) and return it."""
    rng = random.Random(0)
    with Atlas.open_for_writing(root) as atlas, atlas.batch() as session:
        model, units = add_model(session, SLUG, "Fixture LM", "A hand-built weight-sparse LM.", CARD)
        for index in range(D_MLP):
            if (f"0.{LayerKind.MLP}", index) != UNMEASURED:
                units[f"0.{LayerKind.MLP}", index].stats = layer_stats(index)
        units[NEURON].stats = {**stats(0.12, TOP_MAX, [" <", "\n", "né"], effects=True), Stat.BANDS: BANDS}
        units[CHANNEL].stats = stats(0.6, TOP_MAX, ODD_TOP_TOKENS, effects=True)
        units[QUERY].stats = {**stats(0.25, TOP_MAX, [":"], effects=False), Stat.MIN: 0.0, Stat.BANDS: BANDS}
        session.add_all(examples(rng, units[NEURON], 20, 5, first=known_window()))
        session.add_all(examples(rng, units[CHANNEL], 20, 5, first=odd_window()))
        session.add_all(examples(rng, units[QUERY], 3, 2))
        session.add_all(negative_side(rng, units[NEURON], BANDS, BOTTOM_VALUES))
        session.add_all(negative_side(rng, units[QUERY], BANDS, [], skip=1))

        def edge(src: tuple[str, int], dst: tuple[str, int], weight: float) -> Edge:
            return Edge(src_unit_id=units[src].id, dst_unit_id=units[dst].id, kind=EdgeKind.WEIGHT, weight=weight)

        mid, post = f"0.{LayerKind.RESID_MID}", f"1.{LayerKind.RESID_PRE}"
        session.add_all([edge((mid, 1), NEURON, 0.7), edge((mid, 2), NEURON, -0.4), edge((mid, 5), NEURON, 0.25),
                         edge(NEURON, (post, 0), 1.2), edge(NEURON, CHANNEL, -0.9)])
        readers = [(f"1.{kind}", i) for kind in (LayerKind.ATTN_Q, LayerKind.ATTN_K, LayerKind.ATTN_V)
                   for i in range(D_MODEL)] + [(f"1.{LayerKind.MLP}", i) for i in range(6)]
        session.add_all(edge(CHANNEL, reader, round(rng.uniform(-1, 1), 3) or 0.5) for reader in readers)

        quote = {CircuitKey.CURVE: QUOTE_CURVE, CircuitKey.EXAMPLES: QUOTE_EXAMPLES, CircuitKey.LOGITS: QUOTE_LOGITS,
                 CircuitKey.SIZES: QUOTE_SIZES,
                 CircuitKey.TRACE: [{"step": step, "task_loss": round(0.7 - step / 1000, 3), "kept": 288 - step // 2}
                                    for step in range(0, 400, 10)]}
        add_circuit(session, model, units, TASK, QUOTE_NODES, QUOTE_EDGES, 0.14,
                    {**quote, **evidence(True, len(QUOTE_NODES), len(QUOTE_EDGES), 0.14)})
        add_circuit(session, model, units, FAITHLESS_TASK, FAITHLESS_NODES, FAITHLESS_EDGES, 0.13,
                    {CircuitKey.CURVE: [[1, 0.6], [3, 0.13]],
                     **evidence(True, len(FAITHLESS_NODES), len(FAITHLESS_EDGES), 0.13, full=FAITHLESS_FULL,
                                heldout=FAITHLESS_HELDOUT, beats_full=True, interval=FAITHLESS_INTERVAL,
                                null=FAITHLESS_NULL)})
        add_circuit(session, model, units, NOT_FOUND_TASK, {}, [], NOT_FOUND_BEST[0],
                    {CircuitKey.CURVE: NOT_FOUND_CURVE, CircuitKey.EXAMPLES: QUOTE_EXAMPLES,
                     CircuitKey.SIZES: NOT_FOUND_SIZES,
                     **evidence(False, 0, 0, NOT_FOUND_BEST[0], full=NOT_FOUND_FULL, best=NOT_FOUND_BEST)})

        dense, dense_units = add_model(session, DENSE_SLUG, "Fixture LM (dense)", "Its dense twin.", DENSE_CARD)
        dense_curve = [[k, max(DENSE_LOSS, round(0.7 - k / 250, 3))] for k in (1, 2, 4, 8, 16, 32, 64, 128, 144)]
        add_circuit(session, dense, dense_units, TASK, {node: round(rng.uniform(0.01, 1), 3) for node in dense_nodes()},
                    DENSE_EDGES, DENSE_LOSS, {CircuitKey.CURVE: dense_curve, CircuitKey.EXAMPLES: QUOTE_EXAMPLES,
                                              CircuitKey.LOGITS: QUOTE_LOGITS, CircuitKey.SIZES: DENSE_SIZES,
                                              **evidence(True, len(dense_nodes()), len(DENSE_EDGES), DENSE_LOSS,
                                                         full={"loss": 0.1, "accuracy": 0.96},
                                                         heldout=DENSE_HELDOUT)})
        add_circuit(session, dense, dense_units, FAITHLESS_TASK, {}, [], DENSE_BRACKET_BEST[0],
                    {CircuitKey.CURVE: [[1, 0.69], [100, 0.5], [288, 0.52]],
                     **evidence(False, 0, 0, DENSE_BRACKET_BEST[0], full=DENSE_BRACKET_FULL,
                                best=DENSE_BRACKET_BEST)})
        add_circuit(session, dense, dense_units, NOT_FOUND_TASK, DENSE_SET_NODES, DENSE_SET_EDGES, 0.12,
                    {CircuitKey.CURVE: [[1, 0.6], [10, 0.12]], CircuitKey.SIZES: DENSE_SET_SIZES,
                     **evidence(True, len(DENSE_SET_NODES), len(DENSE_SET_EDGES), 0.12, full=NOT_FOUND_FULL)})
    return root


@pytest.fixture(scope="session")
def lm_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("lm-atlas"))


@pytest.fixture(scope="session")
def lm_server(lm_atlas: Path) -> Iterator[str]:
    with serving(lm_atlas) as url:
        yield url


# A circuit the size of a large real one, for ``bench/circuit_page.py``: a model shaped like TinyLM (2 blocks,
# d_model 256, d_mlp 1024: 5,632 nodes), every unit measured, every node and embedding channel with 20 top and
# 5 random contexts, and a circuit keeping ``n_nodes`` of them with about ``edges_per_node`` weights each (a sparse
# model's circuits have about 4), every evidence key recorded.
LARGE_SLUG, LARGE_TASK = "large-lm", "large_task"
LARGE_D_MODEL, LARGE_D_MLP = 256, 1024


def large_stats(rng: random.Random) -> dict:
    counts = [rng.randrange(1, 500) for _ in range(40)]
    return {Stat.DENSITY: round(rng.uniform(0.001, 0.5), 4), Stat.MEAN: round(rng.uniform(0, 1), 4),
            Stat.MAX: round(rng.uniform(0.5, 8), 3), Stat.MIN: round(rng.uniform(-1, 0), 3), Stat.N: 262144,
            Stat.MEASURE: "activation at every token of 262,144 held-out tokens",
            Stat.HISTOGRAM: {"edges": [i / 8 for i in range(41)], "counts": counts},
            Stat.TOP_TOKENS: [rng.choice(["x", " =", " 1", "\n", "(", ")", " if", '"', "'"]) for _ in range(5)],
            Stat.LOGIT_EFFECTS: {key: [{"token": f"t{i}", "id": i, "value": round(rng.uniform(-1, 1), 3)}
                                       for i in range(10)] for key in ("promoted", "suppressed")}}


def build_large(root: Path, n_nodes: int = 1500, edges_per_node: float = 4.0, seed: int = 0) -> Path:
    """Write the large circuit's atlas into ``root`` (a new directory) and return it."""
    rng = random.Random(seed)
    widths = {kind: LARGE_D_MLP if kind == LayerKind.MLP else LARGE_D_MODEL for kind in BLOCK}
    layers = [(f"{b}.{kind}", kind, widths[kind]) for b in range(N_BLOCKS) for kind in BLOCK]
    layers.append((f"{N_BLOCKS - 1}.{LayerKind.RESID_POST}", LayerKind.RESID_POST, LARGE_D_MODEL))
    with Atlas.open_for_writing(root) as atlas, atlas.batch() as session:
        model = Model(slug=LARGE_SLUG, title="Large LM", kind="language", description="TinyLM-shaped, hand-built.",
                      source="tests/lm_fixture.py", card=CARD)
        session.add(model)
        session.flush()
        units: dict[tuple[str, int], int] = {}
        for position, (name, kind, n) in enumerate(layers):
            layer = Layer(model_id=model.id, name=name, position=position, kind=kind, n_units=n, shape=[n],
                          description=f"{kind} of block {name.partition('.')[0]}")
            session.add(layer)
            session.flush()
            session.execute(insert(Unit), [{"layer_id": layer.id, "index": i, "stats": large_stats(rng)}
                                           for i in range(n)])
            for unit_id, index in session.execute(select(Unit.id, Unit.index).where(Unit.layer_id == layer.id)):
                units[name, index] = unit_id
        candidates = [(f"{b}.{kind}", i) for b in range(N_BLOCKS) for kind in CIRCUIT_NODE_KINDS
                      for i in range(widths[kind])]
        kept = rng.sample(candidates, n_nodes)
        by_layer: dict[str, list[int]] = {}
        for name, index in kept:
            by_layer.setdefault(name, []).append(index)
        pairs = []  # the kinds of weight a circuit counts, inside each block
        for b in range(N_BLOCKS):
            def of(kind: str) -> list[tuple[str, int]]:
                return [(f"{b}.{kind}", i) for i in by_layer.get(f"{b}.{kind}", [])]
            pairs += [(s, d) for s in of(LayerKind.ATTN_IN) for kind in (LayerKind.ATTN_Q, LayerKind.ATTN_K,
                                                                          LayerKind.ATTN_V) for d in of(kind)]
            pairs += [(s, d) for s in of(LayerKind.ATTN_V) for d in of(LayerKind.ATTN_OUT)]
            pairs += [(s, d) for s in of(LayerKind.MLP_IN) for d in of(LayerKind.MLP)]
            pairs += [(s, d) for s in of(LayerKind.MLP) for d in of(LayerKind.MLP_OUT)]
        edges = rng.sample(pairs, min(len(pairs), round(n_nodes * edges_per_node)))
        writes = [(name, i) for name, i in kept if name.endswith((LayerKind.ATTN_OUT, LayerKind.MLP_OUT))]
        logits = [{"layer": name, "index": i, "token": token, "weight": round(rng.uniform(-2, 2), 3)}
                  for name, i in writes for token in CANDIDATES]
        curve = sorted({min(k, len(candidates)): round(0.7 * 0.5 ** (k / 400) + 0.05, 4)
                        for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1400, 1450, 1500, 1600, 2048, 4096)}
                       .items())
        circuit = Circuit(model_id=model.id, slug=LARGE_TASK, task=LARGE_TASK, target_loss=TARGET, loss=0.149,
                          n_nodes=n_nodes, n_edges=len(edges), params={
                              **evidence(met=True, k=n_nodes, edges=len(edges), loss=0.149),
                              CircuitKey.CONFIG: QUOTE_CONFIG, CircuitKey.CURVE: [list(p) for p in curve],
                              CircuitKey.TRACE: [{"step": s, "task_loss": round(0.7 - s / 1000, 3),
                                                  "kept": 5632 - s * 10} for s in range(0, 400, 10)],
                              CircuitKey.EXAMPLES: QUOTE_EXAMPLES, CircuitKey.LOGITS: logits,
                              CircuitKey.SIZES: QUOTE_SIZES})
        session.add(circuit)
        session.flush()
        session.execute(insert(CircuitNode), [{"circuit_id": circuit.id, "unit_id": units[node],
                                               "score": round(rng.uniform(0.01, 1), 4)} for node in kept])
        session.execute(insert(Edge), [{"src_unit_id": units[s], "dst_unit_id": units[d], "kind": EdgeKind.CIRCUIT,
                                        "circuit_id": circuit.id, "weight": round(rng.uniform(-1, 1), 4) or 0.5}
                                       for s, d in edges])
        embedded = [(f"0.{LayerKind.RESID_PRE}", i) for i in range(LARGE_D_MODEL)]
        for node in kept + embedded:
            rows = [{"unit_id": units[node], "kind": ExampleKind.TOP, "rank": rank, "activation": 8 - rank / 4,
                     "source": window(rng, 8 - rank / 4, f"lib/m{rank}.py", 64 * rank)} for rank in range(20)]
            rows += [{"unit_id": units[node], "kind": ExampleKind.RANDOM, "rank": rank, "activation": 0.5,
                      "source": window(rng, 0.5, f"lib/r{rank}.py", 5000 + 64 * rank)} for rank in range(5)]
            session.execute(insert(Example), rows)
    return root
