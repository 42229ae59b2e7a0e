"""A small language-model atlas built by hand, as the LM precompute job will write it (``store.keys``), so the LM
pages can be tested without torch, a tokenizer or a trained model.

The model "fixture-lm" has 2 blocks, d_model 8, 4 query/key/value channels per head times 2 heads, and d_mlp 16, so
its layers are ``{0,1}.resid_pre``, ``.attn.q``, ``.attn.k``, ``.attn.v``, ``.resid_mid``, ``.mlp.post_act`` and
``1.resid_post``. Every unit has a row; a few are filled in full:

- ``NEURON`` (an MLP neuron): 20 top contexts stored out of rank order, 5 random ones, a histogram, logit effects,
  and weights from three residual channels and to two. Its top context holds a newline, quotes, ``<``, non-ASCII
  text and a negative activation.
- ``CHANNEL`` (a residual channel): contexts, logit effects, and more edges than a vision page would list (30 out).
- ``QUERY`` (an attention query channel): contexts and statistics but no logit effects, as the job writes them.
- the other units of ``NEURON``'s layer: density, max and top tokens in an order unlike their index, except
  ``UNMEASURED`` (not measured yet) and ``DEAD`` (measured, never fires: an empty histogram).

Use the fixtures by importing them into a test module: ``from tests.lm_fixture import lm_atlas, lm_server``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import Atlas
from store.keys import CardKey, ContextKey, EdgeKind, ExampleKind, LayerKind, Stat
from store.schema import Edge, Example, Layer, Model, Unit
from tests.conftest import serving

SLUG = "fixture-lm"
N_BLOCKS, D_MODEL, D_MLP = 2, 8, 16
NEURON = (f"0.{LayerKind.MLP}", 3)
CHANNEL = (f"1.{LayerKind.RESID_PRE}", 4)
QUERY = (f"1.{LayerKind.ATTN_Q}", 2)
UNMEASURED = (f"0.{LayerKind.MLP}", 15)
DEAD = (f"0.{LayerKind.MLP}", 5)

BLOCK = (LayerKind.RESID_PRE, LayerKind.ATTN_Q, LayerKind.ATTN_K, LayerKind.ATTN_V, LayerKind.RESID_MID, LayerKind.MLP)
# The neuron's top context: code with a newline (and indentation), quotes, an HTML-special "<", non-ASCII text, and a
# negative activation at "else"; the neuron peaks on " <".
KNOWN_TOKENS = ["def", " clamp", "(", "x", "):", "\n", "    ", "if", " x", " <", " 0", ":", " return", ' "', "né",
                "λ", '"', "\n", "    ", "else", ":", " return", " x"]
KNOWN_PEAK = KNOWN_TOKENS.index(" <")
KNOWN_NEGATIVE = KNOWN_TOKENS.index("else")
KNOWN_DOCUMENT = "lib/clamp.py"
TOP_MAX = 4.5

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
    "suppressed": [{"token": " ", "id": 4, "value": -0.61}, {"token": "\t", "id": 5, "value": -0.3}],
}


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


def examples(rng: random.Random, unit: Unit, n_top: int, n_random: int, known: bool = False) -> list[Example]:
    """Top contexts ranked 0.. by falling activation (added in shuffled order, so pages must sort by rank) and
    random ones."""
    top = [(rank, TOP_MAX - 0.2 * rank) for rank in range(n_top)]
    rng.shuffle(top)
    rows = [Example(unit_id=unit.id, kind=ExampleKind.TOP, rank=rank, activation=peak,
                    source=known_window() if known and rank == 0 else window(rng, peak, f"lib/m{rank}.py", 64 * rank))
            for rank, peak in top]
    rows += [Example(unit_id=unit.id, kind=ExampleKind.RANDOM, rank=rank, activation=peak,
                     source=window(rng, peak, f"lib/r{rank}.py", 5000 + 64 * rank))
             for rank, peak in enumerate(round(rng.uniform(0.1, 1.0), 3) for _ in range(n_random))]
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


def build(root: Path) -> Path:
    """Write the fixture atlas into ``root`` (a new directory) and return it."""
    rng = random.Random(0)
    with Atlas.open_for_writing(root) as atlas, atlas.batch() as session:
        model = Model(slug=SLUG, title="Fixture LM", kind="language", description="A hand-built weight-sparse LM.",
                      source="tests/lm_fixture.py", card=CARD)
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

        for index in range(D_MLP):
            if (f"0.{LayerKind.MLP}", index) != UNMEASURED:
                units[f"0.{LayerKind.MLP}", index].stats = layer_stats(index)
        units[NEURON].stats = stats(0.12, TOP_MAX, [" <", "\n", "né"], effects=True)
        units[CHANNEL].stats = stats(0.6, TOP_MAX, [" x", "λ"], effects=True)
        units[QUERY].stats = stats(0.25, TOP_MAX, [":"], effects=False)
        session.add_all(examples(rng, units[NEURON], 20, 5, known=True))
        session.add_all(examples(rng, units[CHANNEL], 20, 5))
        session.add_all(examples(rng, units[QUERY], 3, 2))

        def edge(src: tuple[str, int], dst: tuple[str, int], weight: float) -> Edge:
            return Edge(src_unit_id=units[src].id, dst_unit_id=units[dst].id, kind=EdgeKind.WEIGHT, weight=weight)

        mid, post = f"0.{LayerKind.RESID_MID}", f"1.{LayerKind.RESID_PRE}"
        session.add_all([edge((mid, 1), NEURON, 0.7), edge((mid, 2), NEURON, -0.4), edge((mid, 5), NEURON, 0.25),
                         edge(NEURON, (post, 0), 1.2), edge(NEURON, CHANNEL, -0.9)])
        readers = [(f"1.{kind}", i) for kind in (LayerKind.ATTN_Q, LayerKind.ATTN_K, LayerKind.ATTN_V)
                   for i in range(D_MODEL)] + [(f"1.{LayerKind.MLP}", i) for i in range(6)]
        session.add_all(edge(CHANNEL, reader, round(rng.uniform(-1, 1), 3) or 0.5) for reader in readers)
    return root


@pytest.fixture(scope="session")
def lm_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("lm-atlas"))


@pytest.fixture(scope="session")
def lm_server(lm_atlas: Path) -> Iterator[str]:
    with serving(lm_atlas) as url:
        yield url
