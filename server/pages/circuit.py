"""``/models/{model}/circuits/{task}``: one task circuit of a language model, found by pruning.

The page draws the circuit as a layered graph (``static/circuit.js``, from the page's own JSON: nodes with a brief of
what each unit does, the strongest weights, residual and logit links) beside the loss-vs-k curve, the faithfulness
table, held-out examples and the pruning config. The twin lists every edge; the graph draws the ``drawn_edges``
strongest, so a dense model's circuit of tens of thousands of weights still lays out in a browser.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from server.circuit_wiring import Node, Wiring, read_wiring
from server.pages.common import circuit_summary, find_circuit, find_model, model_ref, unit_ref
from server.urls import circuit_graph_url, links, task_url
from store.keys import CircuitKey, ContextKey, ExampleKind, Stat
from store.schema import Example, Layer, Model

MAX_DRAWN_EDGES = 300  # the strongest weights a page draws; dagre lays out a few hundred in well under a second
BRIEF_CONTEXTS = 3  # top contexts in a node's brief
BRIEF_BEFORE, BRIEF_AFTER = 8, 3  # tokens kept around the marked one in a brief's context
SCORE_KEYS = ("loss", "accuracy", "agreement")
ABLATIONS = ("full", "circuit_mean", "circuit_zero", "ablated_mean")
TRACE_KEYS = ("step", "task_loss", "kept")

TOP_CONTEXTS = (select(Example.unit_id, Example.activation, Example.source)
                .where(Example.unit_id.in_(bindparam("units", expanding=True)), Example.kind == ExampleKind.TOP,
                       Example.rank < BRIEF_CONTEXTS)
                .order_by(Example.unit_id, Example.rank))


def circuit_page(session: Session, slug: str, task: str, writer_active: bool) -> dict[str, Any]:
    model = find_model(session, slug)
    circuit = find_circuit(session, model, task)
    wiring = read_wiring(session, circuit)
    contexts = top_contexts(session, [node.unit_id for node in wiring.nodes + wiring.embeddings])
    params = circuit.params or {}

    def node(n: Node) -> dict[str, Any]:
        return {**unit_ref(model.slug, n.layer, n.index), "kind": n.kind, "column": n.column, "tau": n.tau,
                "brief": brief(n.stats, contexts.get(n.unit_id, []))}

    return {
        **circuit_summary(model, circuit),
        "model": model_ref(model),
        "compare": links(task_url(circuit.slug)),
        "download": {"url": circuit_graph_url(model.slug, circuit.slug), "media_type": "application/json"},
        "nodes": [node(n) for n in wiring.nodes],
        "embeddings": [node(n) for n in wiring.embeddings],
        "candidates": [{"token": token, "column": wiring.logit_column} for token in wiring.candidates],
        **links_of(wiring),
        "curve": [{"k": k, "loss": loss} for k, loss in params.get(CircuitKey.CURVE) or []],
        "trace": [{key: step[key] for key in TRACE_KEYS} for step in params.get(CircuitKey.TRACE) or []],
        "faithfulness": faithfulness(params.get(CircuitKey.FAITHFULNESS)),
        "examples": [example(pair) for pair in params.get(CircuitKey.EXAMPLES) or []],
        "config": params.get(CircuitKey.CONFIG) or {},
    }


def links_of(wiring: Wiring) -> dict[str, Any]:
    """Every edge (strongest first) and how many the graph draws, the residual links and the logit reads."""
    return {
        "edges": [{"src_layer": src, "src_index": i, "dst_layer": dst, "dst_index": j, "weight": weight}
                  for src, i, dst, j, weight in wiring.edges],
        "drawn_edges": min(len(wiring.edges), MAX_DRAWN_EDGES),
        "residual": [{"src_layer": src, "dst_layer": dst, "index": index} for src, dst, index in wiring.residual],
        "logits": wiring.logits,
    }


def top_contexts(session: Session, unit_ids: list[int]) -> dict[int, list[tuple[float, dict[str, Any]]]]:
    """Each unit's first few top contexts, in rank order, as (activation, window)."""
    found: dict[int, list[tuple[float, dict[str, Any]]]] = {}
    for unit_id, activation, source in session.execute(TOP_CONTEXTS, {"units": unit_ids}):
        found.setdefault(unit_id, []).append((activation, source))
    return found


def brief(stats: dict[str, Any], contexts: list[tuple[float, dict[str, Any]]]) -> dict[str, Any] | None:
    """Density, max, top tokens and a few short windows around the unit's peaks; None when nothing is measured."""
    if not stats and not contexts:
        return None
    return {"density": stats.get(Stat.DENSITY), "max": stats.get(Stat.MAX),
            "top_tokens": stats.get(Stat.TOP_TOKENS) or [],
            "contexts": [short_window(activation, window) for activation, window in contexts]}


def short_window(activation: float, window: dict[str, Any]) -> dict[str, Any]:
    tokens, position = window[ContextKey.TOKENS], window[ContextKey.POSITION]
    start = max(0, position - BRIEF_BEFORE)
    return {"activation": activation, "tokens": tokens[start:position + BRIEF_AFTER + 1], "position": position - start}


def faithfulness(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """The held-out scores under each ablation, with only the keys the twin documents."""
    if not stored:
        return None

    def scores(name: str) -> dict[str, Any] | None:
        found = stored.get(name)
        return {key: found.get(key) for key in SCORE_KEYS} if found else None

    return {"pairs": stored.get("pairs"), **{name: scores(name) for name in ABLATIONS}}


def example(pair: dict[str, Any]) -> dict[str, Any]:
    def verdict(found: dict[str, Any] | None) -> dict[str, Any] | None:
        return {"choice": found["choice"], "p_correct": found["p_correct"]} if found else None

    return {"tokens": pair["tokens"], "correct": pair["correct"], "wrong": pair["wrong"],
            "full": verdict(pair.get("full")), "circuit": verdict(pair.get("circuit"))}


def has_circuits_layer(session: Session, slug: str) -> bool:
    """Whether the model has a layer named ``circuits``, whose unit URLs share the shape of circuit URLs."""
    return session.scalar(select(Layer.id).join(Model, Model.id == Layer.model_id)
                          .where(Model.slug == slug, Layer.name == "circuits")) is not None
