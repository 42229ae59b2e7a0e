"""``/circuits`` and ``/circuits/{task}``: the tasks that have circuits, and every language model's circuit for one
task side by side.

The paper's claim is about circuit size at matched pretraining loss and the same task loss, so each row carries the
model's held-out loss from its card next to the circuit's size, and each (dense, sparse) pair of models says how many
times more edges and nodes the dense model's circuit needs at one task loss: the target when both circuits met it,
else the tightest loss both reach.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.errors import NotFound
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
    return {
        **links(task_url(slug)),
        "slug": slug,
        "task": found[0][0].task,
        "circuits": rows,
        "pairs": [pair(dense, sparse) for dense in rows if dense["weights"] == "dense"
                  for sparse in rows if sparse["weights"] == "sparse"],
        "up": links(tasks_url()),
    }


def row(circuit: Circuit, model: Model) -> dict[str, Any]:
    card = model.card or {}
    return {**circuit_summary(model, circuit), "model": model_ref(model),
            "weights": (card.get(CardKey.SPARSITY) or {}).get("weights"),
            "pretraining_loss": (card.get(CardKey.HELDOUT) or {}).get("loss"),
            "sizes": circuit.params.get(CircuitKey.SIZES) or []}


def pair(dense: dict[str, Any], sparse: dict[str, Any]) -> dict[str, Any]:
    """The two circuits compared at one task loss: the target when both met it, else the tightest of the recorded
    sizes (``CircuitKey.SIZES``) both reach; no ratios when there is none."""
    if dense["met"] and sparse["met"] and dense["target_loss"] == sparse["target_loss"]:
        loss, at_target = dense["target_loss"], True
        d, s = (dense["n_nodes"], dense["n_edges"]), (sparse["n_nodes"], sparse["n_edges"])
    else:
        at_target = False
        dense_at = {size["target"]: (size["k"], size["edges"]) for size in dense["sizes"]}
        common = sorted(size["target"] for size in sparse["sizes"] if size["target"] in dense_at)
        loss = common[0] if common else None
        d = dense_at[loss] if common else None
        s = next((size["k"], size["edges"]) for size in sparse["sizes"] if size["target"] == loss) if common else None
    return {"dense": dense["model"], "sparse": sparse["model"], "loss": loss, "at_target": at_target,
            "dense_size": {"nodes": d[0], "edges": d[1]} if d else None,
            "sparse_size": {"nodes": s[0], "edges": s[1]} if s else None,
            "edge_ratio": d[1] / s[1] if d and s and s[1] else None,
            "node_ratio": d[0] / s[0] if d and s and s[0] else None}
