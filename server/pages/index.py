"""``/``: every model in the atlas, with its size, how much is rendered, and the job filling it, if any; and the way
to the task circuits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.pages.common import model_ref, rendered_counts, run_progress
from server.urls import links, tasks_url
from store import FORMAT_VERSION
from store.schema import Circuit, Layer, Model, Run


def index_page(session: Session, writer_active: bool) -> dict[str, Any]:
    models = session.scalars(select(Model).order_by(Model.title)).all()
    units = dict(session.execute(select(Layer.model_id, func.sum(Layer.n_units)).group_by(Layer.model_id)).all())
    layers = dict(session.execute(select(Layer.model_id, func.count()).group_by(Layer.model_id)).all())
    rendered = rendered_counts(session, Layer.model_id)
    circuits = dict(session.execute(select(Circuit.model_id, func.count()).group_by(Circuit.model_id)).all())
    n_tasks = session.scalar(select(func.count(Circuit.slug.distinct())))
    latest_ids = select(func.max(Run.id)).group_by(Run.model_id)
    latest = {run.model_id: run for run in session.scalars(select(Run).where(Run.id.in_(latest_ids)))}
    newest = max((run.id for run in latest.values()), default=None)

    def job(model: Model) -> dict[str, Any] | None:
        run = latest.get(model.id)
        if run is None or run.finished_at is not None:
            return None
        return run_progress(run, writer_active, run.id == newest)

    return {
        **links("/"),
        "format_version": FORMAT_VERSION,
        "writer_active": writer_active,
        "models": [
            {
                **model_ref(m),
                "description": m.description,
                "n_layers": layers.get(m.id, 0),
                "n_units": units.get(m.id, 0),
                "n_rendered": rendered.get(m.id, 0),
                "job": job(m),
                "n_circuits": circuits.get(m.id, 0),
            }
            for m in models
        ],
        "circuits": {**links(tasks_url()), "n_tasks": n_tasks, "n_circuits": sum(circuits.values())},
    }
