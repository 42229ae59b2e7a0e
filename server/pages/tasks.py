"""``/circuits`` and ``/circuits/{task}``: the tasks that have circuits, and every language model's circuit for one
task side by side.

The paper's claim is about circuit size at matched pretraining loss and the same task loss, so each row carries the
model's held-out loss from its card next to the circuit's size, and the full model's own held-out task loss and
accuracy: a model whose full loss misses the target does not solve the task, and no circuit of it is compared. Each
(dense, sparse) pair of models says in words what can be compared, and how many times more edges and nodes the dense
model's circuit needs: at the target when both circuits were found there; when one was not found (and both models
solve the task), at the tightest recorded loss both reach, marked as not the target; no ratio at all when either
model does not solve the task.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.errors import NotFound
from server.circuit_wiring import is_met
from server.pages.circuit_compare import side_by_side
from server.pages.common import circuit_summary, echo, model_ref
from server.urls import links, task_url, tasks_url
from store.keys import CardKey, CircuitKey
from store.schema import Circuit, Model

CIRCUITS = select(Circuit, Model).join(Model, Model.id == Circuit.model_id).order_by(Circuit.slug, Model.title)


def tasks_page(session: Session, writer_active: bool) -> dict[str, Any]:
    tasks: dict[str, dict[str, Any]] = {}
    for circuit, model in session.execute(CIRCUITS):
        entry = tasks.setdefault(circuit.slug, {"slug": circuit.slug, "task": circuit.task, "models": [],
                                                **links(task_url(circuit.slug))})
        entry["models"].append(model_ref(model))
    return {**links(tasks_url()), "tasks": list(tasks.values())}


def task_page(session: Session, slug: str, writer_active: bool) -> dict[str, Any]:
    found = session.execute(CIRCUITS.where(Circuit.slug == slug)).all()
    if not found:
        have = session.scalars(select(Circuit.slug).distinct().order_by(Circuit.slug)).all()
        raise NotFound(f"task {echo(slug)} not found: "
                       + (f"circuits exist for {', '.join(have)}" if have else "this atlas has no circuits yet"))
    rows = [row(circuit, model) for circuit, model in found]
    pairs = [pair(dense, sparse) for dense in rows if dense["weights"] == "dense"
             for sparse in rows if sparse["weights"] == "sparse"]
    return {
        **links(task_url(slug)),
        "slug": slug,
        "task": found[0][0].task,
        "circuits": rows,
        "pairs": pairs,
        "drawings": side_by_side(session, found, pairs),
        "up": links(tasks_url()),
    }


def row(circuit: Circuit, model: Model) -> dict[str, Any]:
    card, params = model.card or {}, circuit.params or {}
    found = is_met(circuit)
    target = params.get(CircuitKey.TARGET) or {}
    full = ((params.get(CircuitKey.FAITHFULNESS) or {}).get("full")) or {}
    loss = full.get("loss")
    solves = None if loss is None else loss <= circuit.target_loss
    best_loss, best_k = target.get("best_loss", circuit.loss), target.get("best_k", circuit.n_nodes)
    if solves is False:
        status = f"{model.title} does not solve the task (loss {loss:.3g}, accuracy {percent(full.get('accuracy'))})"
    elif not found:
        status = f"not found: best loss {best_loss:.3g}" + (f" at k = {best_k:,}" if best_k is not None else "")
    else:
        status = f"found: {circuit.n_nodes:,} nodes, {circuit.n_edges:,} edges"
    return {**circuit_summary(model, circuit), "model": model_ref(model),
            "n_nodes": circuit.n_nodes if found else 0, "n_edges": circuit.n_edges if found else 0,
            "status": "found" if found else "not_found", "full": {"loss": loss, "accuracy": full.get("accuracy")}
            if full else None, "full_solves": solves, "best_loss": best_loss, "best_k": best_k, "said": status,
            "weights": (card.get(CardKey.SPARSITY) or {}).get("weights"),
            "pretraining_loss": (card.get(CardKey.HELDOUT) or {}).get("loss"),
            "sizes": params.get(CircuitKey.SIZES) or []}


def percent(x: float | None) -> str:
    return "not recorded" if x is None else f"{x:.0%}"


def pair(dense: dict[str, Any], sparse: dict[str, Any]) -> dict[str, Any]:
    """The two circuits compared at one task loss, and what can be said of them in words: no ratio when either model
    does not solve the task; at the target when both circuits were found there; else at the tightest of the recorded
    sizes (``CircuitKey.SIZES``) both reach, marked as not the target; no ratio when there is none."""
    unsolved = [side for side in (dense, sparse) if side["full_solves"] is False]
    loss, at_target, d, s = None, False, None, None
    if unsolved:
        said = "; ".join(side["said"] for side in unsolved) + ": no ratio."
    elif dense["met"] and sparse["met"] and dense["target_loss"] == sparse["target_loss"]:
        loss, at_target = dense["target_loss"], True
        d, s = (dense["n_nodes"], dense["n_edges"]), (sparse["n_nodes"], sparse["n_edges"])
        said = f"Both found at the target {loss:.3g}."
    else:
        dense_at = {size["target"]: (size["k"], size["edges"]) for size in dense["sizes"]}
        common = sorted(size["target"] for size in sparse["sizes"] if size["target"] in dense_at)
        loss = common[0] if common else None
        d = dense_at[loss] if common else None
        s = next((size["k"], size["edges"]) for size in sparse["sizes"] if size["target"] == loss) if common else None
        missed = "; ".join(f"{side['model']['title']}: {side['said']}" for side in (dense, sparse)
                           if not side["met"]) or "The targets differ"
        said = missed + (f". Compared instead at {loss:.3g}, the tightest loss both reach: not the target."
                         if common else ". No recorded loss both reach: no ratio.")
    return {"dense": dense["model"], "sparse": sparse["model"], "loss": loss, "at_target": at_target,
            "dense_size": {"nodes": d[0], "edges": d[1]} if d else None,
            "sparse_size": {"nodes": s[0], "edges": s[1]} if s else None,
            "edge_ratio": d[1] / s[1] if d and s and s[1] else None,
            "node_ratio": d[0] / s[0] if d and s and s[0] else None,
            "said": said}
