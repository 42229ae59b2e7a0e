"""The hand-built LM atlas (``tests/lm_fixture.py``) with what the ``circuits`` stage keeps for a found circuit beside it
(``store.circuit_views``), written by the stage's own ``save_views``: fixture-lm's quote circuit gets a whole node
order and everything measured along it, so the circuit pages can be tested at any k without torch models.

- ``ORDER``: the quote circuit's 15 nodes first, by falling tau (so the circuit at its own k is the circuit), then
  every other node of the model in a seeded shuffle;
- ``WEIGHTS``: the circuit's edges and ``EXTRA_WEIGHTS`` more, drawn from the connections the model's blocks have,
  each joining at least one node outside the circuit; listed up to ``LISTED_K``, counted past it;
- ``KS``: the k's the page offers, all on the curve (``QUOTE_CURVE``), the circuit's 15 among them;
- the probes: per-group ablation losses at every k (null where a group keeps no node), ``PAIRS`` held-out pairs, the
  activations of the first ``ACTIVATION_NODES`` nodes, the attention of the heads among them, logit reads.

Use the fixtures by importing them into a test module: ``from tests.circuit_views_fixture import views_atlas,
views_server``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from precompute.lm.circuit_views import CircuitViews
from precompute.stages.circuits import save_views
from render.circuit_order import RankedEdge
from store import Atlas
from store.keys import CircuitKey, LayerKind
from store.schema import Circuit, Layer, Model, Unit
from tests.conftest import serving
from tests.lm_fixture import QUOTE_CURVE, QUOTE_EDGES, QUOTE_LOGITS, QUOTE_NODES, SLUG, TASK, build, dense_edges, \
    dense_nodes

KS = [1, 2, 4, 8, 15, 32, 64]
LISTED_K = 32
EXTRA_WEIGHTS = 60
ACTIVATION_NODES = 20
D_HEAD = 4
GROUPS = ["0.attn", "0.mlp", "1.attn", "1.mlp"]
PAIRS = [
    {"tokens": [["x", " =", ' "', "a", '"'], ["x", " =", " '", "a", "'"]], "answers": ['"', "'"],
     "p_correct": [0.91, 0.84]},
    {"tokens": [["print", "(", ' "', "hi"], ["print", "(", " '", "hi"]], "answers": ['"', "'"],
     "p_correct": [0.77, 0.69]},
    {"tokens": [["s", " =", ' "', "<", "b"], ["s", " =", " '", "<", "b"]], "answers": ['"', "'"],
     "p_correct": [0.95, 0.9]},
]
PATTERN_PAIRS = 2


def order() -> list[tuple[str, int]]:
    circuit = sorted(QUOTE_NODES, key=lambda node: -QUOTE_NODES[node])
    rest = [node for node in dense_nodes() if node not in QUOTE_NODES]
    random.Random(3).shuffle(rest)
    return circuit + rest


def weights() -> list[tuple[tuple[str, int], tuple[str, int], float]]:
    """The circuit's edges, and more of the model's connections with at least one end outside the circuit."""
    rng = random.Random(4)
    outside = [(src, dst) for src, dst, _ in dense_edges() if src not in QUOTE_NODES or dst not in QUOTE_NODES]
    extra = [(src, dst, round(rng.uniform(-1.5, 1.5), 3) or 0.25) for src, dst in rng.sample(outside, EXTRA_WEIGHTS)]
    return QUOTE_EDGES + extra


def views() -> CircuitViews:
    nodes = order()
    rank = {node: i for i, node in enumerate(nodes)}
    taus = {node: QUOTE_NODES.get(node, round(-0.01 * i, 4)) for i, node in enumerate(nodes)}
    edges = [RankedEdge(max(rank[src], rank[dst]), rank[src], rank[dst], weight) for src, dst, weight in weights()]
    counts = [0] * len(nodes)
    for edge in edges:
        counts[edge.appears] += 1
    curve = dict(QUOTE_CURVE)
    losses = []
    for k in KS:
        kept = {".".join(layer.split(".")[:2]) for layer, _ in nodes[:k]}
        losses.append([k, [round(curve[k] + 0.05 * (place + 1), 4) if group in kept else None
                           for place, group in enumerate(GROUPS)]])
    first = nodes[:ACTIVATION_NODES]
    heads = list(dict.fromkeys((int(layer[0]), index // D_HEAD) for layer, index in first
                               if layer.split(".", 1)[1] in ("attn.q", "attn.k", "attn.v")))
    extra_reads = [{"layer": f"0.{LayerKind.ATTN_OUT}", "index": 1, "token": token, "weight": weight}
                   for token, weight in (('"', 0.7), ("'", -0.6))]
    probes = {
        "ablations": {"groups": GROUPS, "losses": losses},
        "pairs": PAIRS,
        "activations": {"nodes": ACTIVATION_NODES, "values": [
            [[round(0.1 * r + p, 3), round(0.1 * r - p / 2, 3)] for p in range(len(PAIRS))] for r in range(len(first))]},
        "heads": [{"block": block, "head": head, "patterns": [
            [[round(1 / len(tokens), 4)] * len(tokens) for tokens in pair["tokens"]] for pair in PAIRS[:PATTERN_PAIRS]],
            "sink": None} for block, head in heads],
        "logits": QUOTE_LOGITS + extra_reads,
    }
    record = {"nodes": len(nodes), "ks": KS, "listed_k": LISTED_K, "activation_nodes": ACTIVATION_NODES,
              "pairs": len(PAIRS), "pattern_pairs": PATTERN_PAIRS, "d_head": D_HEAD, "groups": GROUPS, "seconds": 1.0}
    return CircuitViews([(layer, index, taus[layer, index], counts[i]) for i, (layer, index) in enumerate(nodes)],
                        [edge for edge in edges if edge.appears < LISTED_K], record, probes)


def add_views(root: Path) -> Path:
    """Give fixture-lm's quote circuit its stored order and probes, as the job would."""
    found = views()
    with Atlas.open_for_writing(root) as atlas, atlas.batch() as session:
        circuit = session.scalar(select(Circuit).join(Model, Model.id == Circuit.model_id)
                                 .where(Model.slug == SLUG, Circuit.slug == TASK))
        ids: dict[str, dict[int, int]] = {}
        for unit_id, layer, index in session.execute(select(Unit.id, Layer.name, Unit.index).join(Layer)
                                                     .where(Layer.model_id == circuit.model_id)):
            ids.setdefault(layer, {})[index] = unit_id
        session.execute(update(Circuit).where(Circuit.id == circuit.id)
                        .values(params={**circuit.params, CircuitKey.VIEWS: found.record}))
        save_views(session, circuit.id, found, ids)
    return root


@pytest.fixture(scope="session")
def views_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return add_views(build(tmp_path_factory.mktemp("lm-views-atlas")))


@pytest.fixture(scope="session")
def views_server(views_atlas: Path) -> Iterator[str]:
    with serving(views_atlas) as url:
        yield url
