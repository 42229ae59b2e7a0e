"""``/models/{model}``: the model card, its layers in forward order, every precompute run (provenance), and a
language model's task circuits or the dataset a vision model's units' examples come from. The card says where the
weights came from (or that they are random: ``untrained``), how images became inputs, a user's model's definition, and
its Microscope name; the page's template shows each part it has."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.pages.common import (
    circuit_summary, find_model, layer_ref, model_ref, rendered_counts, run_progress, untrained,
)
from server.urls import links, model_url
from store.keys import DatasetKey, ModelKind
from store.schema import Circuit, Layer, Run


def model_page(session: Session, slug: str, writer_active: bool) -> dict[str, Any]:
    model = find_model(session, slug)
    rendered = rendered_counts(session, Layer.id, Layer.model_id == model.id)
    runs = session.scalars(select(Run).where(Run.model_id == model.id).order_by(Run.started_at)).all()
    newest = session.scalar(select(func.max(Run.id)))
    common = {
        **links(model_url(model.slug)),
        "model": {**model_ref(model), "description": model.description, "source": model.source, "card": model.card},
        "untrained": untrained(model),
        "layers": [{**layer_ref(model, layer), "n_rendered": rendered.get(layer.id, 0)} for layer in model.layers],
        "runs": [
            {
                "id": run.id,
                "config": run.config,
                "started_at": run.started_at.isoformat(),
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                "progress": run_progress(run, writer_active, run.id == newest),
            }
            for run in runs
        ],
    }
    if model.kind != ModelKind.LANGUAGE:
        return {**common, "dataset": dataset(runs)}
    circuits = session.scalars(select(Circuit).where(Circuit.model_id == model.id).order_by(Circuit.slug))
    return {**common, "circuits": [circuit_summary(model, circuit) for circuit in circuits]}


def dataset(runs: list[Run]) -> dict[str, Any] | None:
    """The dataset of the latest run that names one (``store.keys.DatasetKey``), with that run's id. Runs that found
    every layer's examples done name theirs too, so each example also names its own dataset (``CropKey.DATASET``)."""
    for run in reversed(runs):
        found = (run.config or {}).get("dataset")
        if isinstance(found, dict):
            return {**{key.value: found.get(key) for key in DatasetKey}, "run": run.id}
    return None
