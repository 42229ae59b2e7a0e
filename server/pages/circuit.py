"""``/models/{model}/circuits/{task}``: one task circuit of a language model, found by pruning, with the evidence that
says how far to trust it.

The page heads with a verdict in words: found at the target with its size, or not found with the best loss reached
(a setting that finds nothing never shows the whole model, or any set of nodes, as a circuit), and whether the full
model solves the task at all. Then the evidence, each row with loss, accuracy and agreement beside the target: the
full model, the circuit alone (rest mean- and zero-ablated), the circuit ablated, everything ablated (k = 0), and a
null (the same pruning on a weight-shuffled model); a flag when the circuit alone beats the full model by more than
the noise of that many pairs; the sweep of settings with the chosen one marked; the calibration. A found circuit is
drawn as a layered graph (``static/circuit.js``, from the page's own JSON: nodes with a brief of what each unit does,
the strongest weights, residual and logit links) beside the loss-vs-k curve. The twin lists every edge; the graph
draws the ``drawn_edges`` strongest, so a dense model's circuit of tens of thousands of weights still lays out.

``?k=`` shows the circuit at another k of its curve, with the per-layer ablations, the held-out pairs' activations
and the heads' attention at that k (``server.pages.circuit_views``); the reader's pins, groups and labels live in the
URL and are the page script's alone.

Atlases written before some evidence was recorded still answer: what is missing is null in the twin and "not
recorded" on the page. While a precompute job is finding a circuit the atlas does not have yet, its URL answers with
a page saying so (``status: computing``), which refreshes itself, as a unit page does before its unit is measured.

A circuit's page must build in under 200 ms uncached at 1,500 nodes (``bench/circuit_page.py``): the queries take
only the values a brief shows out of the units' JSON in SQLite, edges are named from the nodes already read, URLs are
made once per layer, and the nodes' contexts stay on their unit pages, which the graph fetches on hover.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from server.circuit_tracer import tracer_ids
from server.circuit_wiring import Node, Wiring, is_met, wiring_at
from server.errors import NotFound
from server.pages.circuit_views import chosen_k, instrument
from server.pages.common import circuit_summary, echo, find_model, model_ref, run_progress
from server.urls import circuit_graph_url, circuit_url, layer_url, links, task_url
from store.keys import CardKey, CircuitKey
from store.schema import Circuit, Layer, Model, Run

MAX_DRAWN_EDGES = 300  # the strongest weights a page draws; dagre lays out a few hundred in well under a second
SCORE_KEYS = ("loss", "accuracy", "agreement")
ABLATIONS = ("full", "circuit_mean", "circuit_zero", "ablated_mean", "all_ablated")
TRACE_KEYS = ("step", "task_loss", "kept")
SWEEP_KEYS = ("k_coef", "lr", "met", "k", "edges", "loss")
NULL_KEYS = ("method", "seed", "met", "k", "edges", "loss")
CALIBRATED = ("all_ablated", "circuit_zero")  # conditions with a calibration of their own, besides the circuit's

# The evidence table's rows: (key in the faithfulness record, label, whether it should do the task)
EVIDENCE = (("full", "full model", True),
            ("circuit_mean", "circuit alone, rest mean-ablated", True),
            ("circuit_zero", "circuit alone, rest zero-ablated", True),
            ("ablated_mean", "circuit ablated (mean), rest intact", False),
            ("all_ablated", "all ablated (k = 0)", False))
CIRCUIT_ROWS = ("circuit_mean", "circuit_zero", "ablated_mean")  # rows only a found circuit has
NO_VIEW = {"view": None, "layers": [], "ablations": None, "activations": None, "heads": None}  # nothing at any k

CIRCUIT = (select(Circuit, Model).join(Model, Model.id == Circuit.model_id)
           .where(Model.slug == bindparam("slug"), Circuit.slug == bindparam("task")))
LATEST_RUN = select(Run).where(Run.model_id == bindparam("model")).order_by(Run.id.desc()).limit(1)
NEWEST_RUN = select(func.max(Run.id))


def circuit_page(session: Session, slug: str, task: str, k: str | None = None, *,
                 writer_active: bool) -> dict[str, Any]:
    """The circuit at its own k, or at ``k`` (``?k=``), one of those its page offers."""
    row = session.execute(CIRCUIT, {"slug": slug, "task": task}).first()
    if row is None:
        return pending_page(session, find_model(session, slug), task, writer_active)
    circuit, model = row
    params = circuit.params or {}
    found = is_met(circuit)
    shown = chosen_k(circuit, found, k)
    wiring, n_edges = wiring_at(session, circuit, found, shown)
    curve = {at: loss for at, loss in params.get(CircuitKey.CURVE) or []}
    drawn = graph(model.slug, wiring, params.get(CircuitKey.EXAMPLES) or [])
    faith = faithfulness(params.get(CircuitKey.FAITHFULNESS))
    target = params.get(CircuitKey.TARGET) or {}
    best_loss = target.get("best_loss", circuit.loss)
    best_k = target.get("best_k", circuit.n_nodes)
    full = (faith or {}).get("full") or {}
    null = null_result(params.get(CircuitKey.NULL))
    summary = circuit_summary(model, circuit)
    urls = {(node["layer"], node["index"]): node["url"] for node in drawn["nodes"]}
    return {
        **summary,
        **(links(f"{circuit_url(model.slug, circuit.slug)}?k={shown}") if k is not None else {}),
        "n_nodes": circuit.n_nodes if found else 0,  # never a size for a circuit that was not found
        "n_edges": circuit.n_edges if found else 0,
        "status": "found" if found else "not_found",
        "verdict": verdict(found, circuit, best_loss, best_k, full),
        "best_loss": best_loss,
        "best_k": best_k,
        "full_solves": solves(full, circuit.target_loss),
        "writer_active": writer_active,
        "job": None,
        "model": model_ref(model),
        "compare": links(task_url(circuit.slug)),
        "download": {"url": circuit_graph_url(model.slug, circuit.slug) + (f"?k={shown}" if k is not None else ""),
                     "media_type": "application/json"},
        **drawn,
        "curve": [{"k": at, "loss": loss} for at, loss in curve.items()],
        "trace": [{key: step[key] for key in TRACE_KEYS} for step in params.get(CircuitKey.TRACE) or []],
        "faithfulness": faith,
        "evidence": evidence(faith, null, found),
        "beats_full": beats_full(faith, found),
        "null": null,
        "sweep": sweep(params.get(CircuitKey.SWEEP)),
        "calibration": calibration(params.get(CircuitKey.CALIBRATION)),
        "examples": [example(pair) for pair in params.get(CircuitKey.EXAMPLES) or []],
        "config": params.get(CircuitKey.CONFIG) or {},
        **(instrument(session, model.slug, circuit, shown, n_edges, curve, wiring, urls) if shown is not None
           else NO_VIEW),
    }


def pending_page(session: Session, model: Model, task: str, writer_active: bool) -> dict[str, Any]:
    """A circuit the atlas does not have: being computed, when the job now writing the atlas is finding it (its run
    asks for the task by name, or for every task and the model's card names it); otherwise a 404 naming what exists."""
    run = session.scalar(LATEST_RUN, {"model": model.id})
    planned = False
    if run is not None and run.finished_at is None and writer_active and run.id == session.scalar(NEWEST_RUN):
        asked = (run.config or {}).get("tasks")
        planned = task in asked if isinstance(asked, list) else (
            asked == "all" and task in ((model.card or {}).get(CardKey.TASKS) or {}))
    if not planned:
        have = session.scalars(select(Circuit.slug).where(Circuit.model_id == model.id).order_by(Circuit.slug)).all()
        raise NotFound(f"circuit {echo(task)} not found in model {model.slug!r}; "
                       + (f"it has circuits for: {', '.join(have)}" if have else "it has no circuits"))
    target = ((run.config or {}).get("circuits") or {}).get("target_loss")
    return {
        **links(circuit_url(model.slug, task)),
        "slug": task, "task": task, "target_loss": target if isinstance(target, (int, float)) else None,
        "loss": None, "met": False, "heldout_loss": None, "n_nodes": 0, "n_edges": 0,
        "status": "computing",
        "verdict": f"Being computed: the precompute job writing this atlas is looking for {model.title}'s {task} "
                   "circuit now.",
        "best_loss": None, "best_k": None, "full_solves": None, "writer_active": writer_active,
        "job": run_progress(run, writer_active, True),
        "model": model_ref(model), "compare": links(task_url(task)),
        "download": {"url": circuit_graph_url(model.slug, task), "media_type": "application/json"},
        "nodes": [], "embeddings": [], "candidates": [], "edges": [], "drawn_edges": 0, "residual": [], "logits": [],
        "curve": [], "trace": [], "faithfulness": None, "evidence": [], "beats_full": None, "null": None,
        "sweep": None, "calibration": None, "examples": [], "config": {}, **NO_VIEW,
    }


def solves(full: dict[str, Any], target: float | None) -> bool | None:
    """Whether the full model's held-out loss is within the target; null when it was not recorded."""
    loss = full.get("loss")
    return None if loss is None or target is None else loss <= target


def fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}g}"


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def verdict(found: bool, circuit: Circuit, best_loss: float, best_k: int | None, full: dict[str, Any]) -> str:
    """The page's headline, in words: found or not, and whether the full model solves the task."""
    target = fmt(circuit.target_loss)
    if found:
        said = (f"Found at the target: {circuit.n_nodes:,} nodes and {circuit.n_edges:,} edges reach task loss "
                f"{fmt(circuit.loss)} on the pruning pairs (target {target}).")
    else:
        at = f" at k = {best_k:,}" if best_k is not None else ""
        said = f"Not found: best loss {fmt(best_loss)}{at}, target {target}. No number of nodes met the target."
    if solves(full, circuit.target_loss) is False:
        said += (f" The full model does not solve this task (held-out loss {fmt(full['loss'])} > target {target}, "
                 f"accuracy {pct(full.get('accuracy'))}).")
    return said


def graph(slug: str, wiring: Wiring, examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Nodes (with briefs), every edge (strongest first) and how many the graph draws, residual links, logit reads;
    each node and logit with its id in the circuit-tracer export, which the page's URL state uses."""
    prefixes: dict[str, str] = {}
    ids, logit_ids = tracer_ids(wiring, examples)

    def node(n: Node) -> dict[str, Any]:
        prefix = prefixes.get(n.layer) or prefixes.setdefault(n.layer, layer_url(slug, n.layer))
        url = f"{prefix}/{n.index}"
        return {"model": slug, "layer": n.layer, "index": n.index, "url": url, "json_url": f"{url}.json",
                "kind": n.kind, "column": n.column, "tau": n.tau, "brief": brief(n),
                "tracer_id": ids[n.layer, n.index], "rank": n.rank}

    return {
        "nodes": [node(n) for n in wiring.nodes],
        "embeddings": [node(n) for n in wiring.embeddings],
        "candidates": [{"token": token, "column": wiring.logit_column, "tracer_id": logit_ids[token]}
                       for token in wiring.candidates],
        "edges": [{"src_layer": src, "src_index": i, "dst_layer": dst, "dst_index": j, "weight": weight}
                  for src, i, dst, j, weight in wiring.edges],
        "drawn_edges": min(len(wiring.edges), MAX_DRAWN_EDGES),
        "residual": [{"src_layer": src, "dst_layer": dst, "index": index} for src, dst, index in wiring.residual],
        "logits": wiring.logits,
    }


def brief(node: Node) -> dict[str, Any] | None:
    """Density, max and top tokens; None until the unit is measured. Its contexts are the unit's own twin's (the
    graph fetches them when a node is pointed at): a circuit of thousands of nodes would otherwise carry tens of
    thousands of windows in every build of its page."""
    if not node.measured:
        return None
    return {"density": node.density, "max": node.max, "top_tokens": list(node.top_tokens)}


def scores(found: Any) -> dict[str, Any] | None:
    return {key: found.get(key) for key in SCORE_KEYS} if isinstance(found, dict) and found else None


def faithfulness(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """The held-out scores under each ablation, with only the keys the twin documents."""
    if not stored:
        return None
    return {"pairs": stored.get("pairs"), **{name: scores(stored.get(name)) for name in ABLATIONS},
            "beats_full": stored.get("beats_full"), "interval": stored.get("interval")}


def null_result(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(stored, dict) or not stored:
        return None
    return {**{key: stored.get(key) for key in NULL_KEYS}, "full": scores(stored.get("full"))}


def evidence(faith: dict[str, Any] | None, null: dict[str, Any] | None, found: bool) -> list[dict[str, Any]]:
    """One row per condition, in the table's order: held-out scores, or why there are none; then the null."""
    rows = []
    for key, label, does_task in EVIDENCE:
        measured = (faith or {}).get(key)
        if measured:
            note = None
        elif key in CIRCUIT_ROWS and not found:
            note = "no circuit found"
        else:
            note = "not recorded"
        rows.append({"key": key, "label": label, "recorded": bool(measured), "should_do_task": does_task,
                     **(measured or dict.fromkeys(SCORE_KEYS)), "note": note})
    if null is None:
        rows.append({"key": "null", "label": "null: the same pruning, weight-shuffled model", "recorded": False,
                     "should_do_task": False, **dict.fromkeys(SCORE_KEYS), "note": "not recorded"})
    else:
        size = (f"found: {null['k']:,} nodes, {null['edges']:,} edges" if null.get("met") and null.get("k") is not None
                and null.get("edges") is not None else "found" if null.get("met") else "not found")
        shuffled = null.get("full") or {}
        note = f"{size}; loss on the pruning pairs" + (
            f"; the shuffled model itself: loss {fmt(shuffled.get('loss'))}, accuracy {pct(shuffled.get('accuracy'))}"
            if shuffled else "")
        seed = f", seed {null['seed']}" if null.get("seed") is not None else ""
        rows.append({"key": "null", "label": f"null: the same pruning, {null.get('method') or 'shuffled'} model{seed}",
                     "recorded": True, "should_do_task": False, "loss": null.get("loss"), "accuracy": None,
                     "agreement": None, "note": note})
    return rows


def beats_full(faith: dict[str, Any] | None, found: bool) -> dict[str, Any] | None:
    """Whether the circuit alone (mean-ablated) has a lower held-out loss than the full model by more than the 95%
    interval of the paired per-pair difference, said in words; null when there is no circuit or nothing recorded."""
    if not found or not faith:
        return None
    full, circuit = (faith.get("full") or {}).get("loss"), (faith.get("circuit_mean") or {}).get("loss")
    flag, interval, pairs = faith.get("beats_full"), faith.get("interval"), faith.get("pairs")
    margin = full - circuit if full is not None and circuit is not None else None
    at = f" at {pairs:,} pairs" if pairs else ""
    if flag is None or interval is None or margin is None:
        statement = "Not recorded: this atlas predates the comparison of the circuit with the full model."
    elif flag:
        statement = (f"The circuit alone beats the full model beyond noise: its held-out loss is {fmt(margin)} lower "
                     f"({fmt(circuit)} against {fmt(full)}), more than the 95% interval of ±{fmt(interval)}{at}. A "
                     "circuit better at the task than the model it was cut from is not doing what the model does: "
                     "the ablation, not the model, supplies part of its answer.")
    else:
        statement = (f"The circuit alone does not beat the full model beyond noise: the full model's held-out loss "
                     f"minus the circuit's is {fmt(margin)}, within the 95% interval of ±{fmt(interval)}{at}.")
    return {"flag": flag, "margin": margin, "interval": interval, "pairs": pairs, "statement": statement}


def sweep(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(stored, dict) or not stored:
        return None
    chosen = stored.get("chosen")
    return {"settings": [{**{key: setting.get(key) for key in SWEEP_KEYS}, "chosen": i == chosen}
                         for i, setting in enumerate(stored.get("settings") or [])],
            "chosen": chosen, "seconds": stored.get("seconds")}


def calibration(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """How the candidates' logit difference is read (scale x difference + shift, fitted on the pruning pairs): at the
    circuit's k, and for the conditions fitted on their own."""
    if not isinstance(stored, dict) or not stored:
        return None

    def fit(found: Any) -> dict[str, Any] | None:
        return {"scale": found.get("scale"), "shift": found.get("shift")} if isinstance(found, dict) else None

    return {**fit(stored), "k": stored.get("k"), **{name: fit(stored.get(name)) for name in CALIBRATED}}


def example(pair: dict[str, Any]) -> dict[str, Any]:
    def choice(found: dict[str, Any] | None) -> dict[str, Any] | None:
        return {"choice": found["choice"], "p_correct": found["p_correct"]} if found else None

    return {"tokens": pair["tokens"], "correct": pair["correct"], "wrong": pair["wrong"],
            "full": choice(pair.get("full")), "circuit": choice(pair.get("circuit"))}


def has_circuits_layer(session: Session, slug: str) -> bool:
    """Whether the model has a layer named ``circuits``, whose unit URLs share the shape of circuit URLs."""
    return session.scalar(select(Layer.id).join(Model, Model.id == Layer.model_id)
                          .where(Model.slug == slug, Layer.name == "circuits")) is not None
