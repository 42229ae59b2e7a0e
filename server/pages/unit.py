"""``/models/{model}/{layer}/{unit}``: everything known about one unit, section by section.

Each section (examples, connections, circuits) is one small function of the unit; a unit that has nothing for a
section yet, or is not rendered at all, still answers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from server.pages.common import (
    asset_dict, find_layer, find_model, image_dict, layer_ref, model_ref, parse_unit, unit_ref,
)
from server.urls import layer_page_url, links, unit_url
from store.schema import Asset, Circuit, CircuitNode, Edge, Example, Layer, Model, Unit, UnitImage

MAX_EDGES = 24  # strongest connections listed per direction on a unit page


def unit_page(session: Session, slug: str, name: str, raw_index: str, per_page: int,
              writer_active: bool) -> dict[str, Any]:
    model = find_model(session, slug)
    layer = find_layer(session, model, name)
    index = parse_unit(layer, raw_index)
    unit = session.scalar(select(Unit).where(Unit.layer_id == layer.id, Unit.index == index))
    stats = unit.stats if unit else {}
    images = []
    if unit:
        images = session.scalars(select(UnitImage).where(UnitImage.unit_id == unit.id).order_by(UnitImage.kind)).all()
    no_edges = {"total": 0, "shown": []}
    return {
        **links(unit_url(model.slug, layer.name, index)),
        "model": model_ref(model),
        "layer": layer_ref(model, layer),
        "index": index,
        "rendered": bool(images),
        "writer_active": writer_active,
        "label": unit.label if unit else None,
        "stats": stats,
        "images": [image_dict(image, stats) for image in images],
        "examples": examples(session, unit) if unit else [],
        "edges": {d: edges(session, unit, d) if unit else no_edges for d in ("in", "out")},
        "circuits": circuits(session, unit) if unit else [],
        "prev": unit_ref(model.slug, layer.name, index - 1) if index > 0 else None,
        "next": unit_ref(model.slug, layer.name, index + 1) if index + 1 < layer.n_units else None,
        "up": links(layer_page_url(model.slug, layer.name, index // per_page + 1)),
    }


def examples(session: Session, unit: Unit) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Example, Asset)
        .outerjoin(Asset, Asset.sha256 == Example.asset_sha256)
        .where(Example.unit_id == unit.id)
        .order_by(Example.kind, Example.rank)
    ).all()
    return [
        {"kind": ex.kind, "rank": ex.rank, "activation": ex.activation, "source": ex.source, "image": asset_dict(asset)}
        for ex, asset in rows
    ]


def edges(session: Session, unit: Unit, direction: str) -> dict[str, Any]:
    """The strongest connections into (``in``: units this one reads) or out of this unit, and how many there are."""
    here, there = (Edge.dst_unit_id, Edge.src_unit_id) if direction == "in" else (Edge.src_unit_id, Edge.dst_unit_id)
    other = aliased(Unit)
    rows = session.execute(
        select(Edge, other.index, Layer.name, Model.slug, Asset)
        .join(other, other.id == there)
        .join(Layer, Layer.id == other.layer_id)
        .join(Model, Model.id == Layer.model_id)
        .outerjoin(Asset, Asset.sha256 == Edge.asset_sha256)
        .where(here == unit.id)
        .order_by(func.abs(Edge.weight).desc())
        .limit(MAX_EDGES)
    ).all()
    return {
        "total": session.scalar(select(func.count()).select_from(Edge).where(here == unit.id)),
        "shown": [
            {"kind": edge.kind, "weight": edge.weight, "unit": unit_ref(slug, name, index), "image": asset_dict(asset)}
            for edge, index, name, slug, asset in rows
        ],
    }


def circuits(session: Session, unit: Unit) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Circuit, CircuitNode.score, Asset)
        .join(CircuitNode, CircuitNode.circuit_id == Circuit.id)
        .outerjoin(Asset, Asset.sha256 == Circuit.graph_sha256)
        .where(CircuitNode.unit_id == unit.id)
        .order_by(Circuit.slug)
    ).all()
    return [
        {
            "slug": circuit.slug,
            "task": circuit.task,
            "target_loss": circuit.target_loss,
            "loss": circuit.loss,
            "n_nodes": circuit.n_nodes,
            "n_edges": circuit.n_edges,
            "params": circuit.params,
            "score": score,
            "graph": asset_dict(asset),
        }
        for circuit, score, asset in rows
    ]
