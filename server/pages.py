"""One function per page builds its data as a plain dict with stable keys.

The JSON twin returns the dict and the HTML template renders the very same dict, so the two can never drift apart.
Every linked thing carries ``url`` and ``json_url``.
"""

import math
import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from server.errors import NotFound
from server.urls import DEFAULT_KIND, asset_url, layer_page_url, layer_url, links, model_url, unit_url
from store import FORMAT_VERSION
from store.schema import Asset, Circuit, CircuitNode, Edge, Example, Layer, Model, Run, Unit, UnitImage

THUMB_KIND = DEFAULT_KIND  # the image kind shown in layer grids by default and counted as "rendered"
MAX_EDGES = 24  # strongest connections listed per direction on a unit page

# -- lookups that 404 with a precise message ------------------------------------------------------------------------


def find_model(session: Session, slug: str) -> Model:
    model = session.scalar(select(Model).where(Model.slug == slug))
    if model is None:
        raise NotFound(f"model {slug!r} not found")
    return model


def find_layer(session: Session, model: Model, name: str) -> Layer:
    layer = session.scalar(select(Layer).where(Layer.model_id == model.id, Layer.name == name))
    if layer is None:
        raise NotFound(f"layer {name!r} not found in model {model.slug!r}")
    return layer


def parse_unit(layer: Layer, raw: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", raw):
        raise NotFound(f"unit {raw!r} not found: units are numbered 0, 1, 2, ...")
    index = int(raw)
    if not 0 <= index < layer.n_units:
        have = f"{layer.n_units} units (0–{layer.n_units - 1})" if layer.n_units else "no units"
        raise NotFound(f"unit {index} out of range: layer {layer.name} has {have}")
    return index


def parse_page(raw: str, pages: int) -> int:
    if not re.fullmatch(r"[0-9]+", raw) or not 1 <= int(raw) <= pages:
        raise NotFound(f"page {raw!r} not found: pages run from 1 to {pages}")
    return int(raw)


# -- small dicts shared by the pages --------------------------------------------------------------------------------


def model_ref(model: Model) -> dict[str, Any]:
    return {"slug": model.slug, "title": model.title, "kind": model.kind, **links(model_url(model.slug))}


def layer_ref(model: Model, layer: Layer) -> dict[str, Any]:
    return {
        "name": layer.name,
        "kind": layer.kind,
        "shape": layer.shape,
        "n_units": layer.n_units,
        "description": layer.description,
        **links(layer_url(model.slug, layer.name)),
    }


def unit_ref(model_slug: str, layer_name: str, index: int) -> dict[str, Any]:
    return {"model": model_slug, "layer": layer_name, "index": index, **links(unit_url(model_slug, layer_name, index))}


def asset_dict(asset: Asset | None) -> dict[str, Any] | None:
    if asset is None:
        return None
    return {
        "url": asset_url(asset.sha256, asset.media_type),
        "sha256": asset.sha256,
        "width": asset.width,
        "height": asset.height,
        "media_type": asset.media_type,
    }


def image_dict(image: UnitImage, stats: dict[str, Any]) -> dict[str, Any]:
    """A unit image, with its activation put next to what the dataset makes the unit do.

    The dataset statistics measure the channel objective (spatial mean), so only channel images are compared.
    """
    comparable = image.kind == THUMB_KIND and image.activation is not None
    act = image.activation
    mean, std, top = (stats.get(key) if comparable else None for key in ("dataset_mean", "dataset_std", "dataset_max"))
    return {
        "kind": image.kind,
        **asset_dict(image.asset),
        "params": image.params,
        "activation": act,
        "times_dataset_max": act / top if top else None,
        "dataset_z": (act - mean) / std if mean is not None and std else None,
    }


def rendered_counts(session: Session, column: Any, *where: Any) -> dict[int, int]:
    """How many units have a thumbnail, grouped by ``column`` (``Layer.id`` or ``Layer.model_id``)."""
    query = (
        select(column, func.count())
        .select_from(UnitImage)
        .join(Unit, Unit.id == UnitImage.unit_id)
        .join(Layer, Layer.id == Unit.layer_id)
        .where(UnitImage.kind == THUMB_KIND, *where)
        .group_by(column)
    )
    return dict(session.execute(query).all())


# -- pages ----------------------------------------------------------------------------------------------------------


def index_page(session: Session) -> dict[str, Any]:
    models = session.scalars(select(Model).order_by(Model.title)).all()
    units = dict(session.execute(select(Layer.model_id, func.sum(Layer.n_units)).group_by(Layer.model_id)).all())
    layers = dict(session.execute(select(Layer.model_id, func.count()).group_by(Layer.model_id)).all())
    rendered = rendered_counts(session, Layer.model_id)
    return {
        **links("/"),
        "format_version": FORMAT_VERSION,
        "models": [
            {
                **model_ref(m),
                "description": m.description,
                "n_layers": layers.get(m.id, 0),
                "n_units": units.get(m.id, 0),
                "n_rendered": rendered.get(m.id, 0),
            }
            for m in models
        ],
    }


def model_page(session: Session, slug: str) -> dict[str, Any]:
    model = find_model(session, slug)
    rendered = rendered_counts(session, Layer.id, Layer.model_id == model.id)
    runs = session.scalars(select(Run).where(Run.model_id == model.id).order_by(Run.started_at)).all()
    return {
        **links(model_url(model.slug)),
        "model": {**model_ref(model), "description": model.description, "source": model.source, "card": model.card},
        "layers": [{**layer_ref(model, layer), "n_rendered": rendered.get(layer.id, 0)} for layer in model.layers],
        "runs": [
            {
                "id": run.id,
                "config": run.config,
                "started_at": run.started_at.isoformat(),
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            }
            for run in runs
        ],
    }


def layer_page(session: Session, slug: str, name: str, page: str, per_page: int, kind: str = THUMB_KIND) -> dict[str, Any]:
    model = find_model(session, slug)
    layer = find_layer(session, model, name)
    kinds = sorted({THUMB_KIND, *session.scalars(
        select(UnitImage.kind).join(Unit).where(Unit.layer_id == layer.id).distinct())})
    if kind not in kinds:
        raise NotFound(f"image kind {kind!r} not found in layer {layer.name!r}; it has: {', '.join(kinds)}")
    pages = max(1, math.ceil(layer.n_units / per_page))
    number = parse_page(page, pages)
    start, stop = (number - 1) * per_page, min(number * per_page, layer.n_units)
    rows = session.execute(
        select(Unit, UnitImage)
        .outerjoin(UnitImage, (UnitImage.unit_id == Unit.id) & (UnitImage.kind == kind))
        .where(Unit.layer_id == layer.id, Unit.index >= start, Unit.index < stop)
    ).all()
    found = {unit.index: (unit, image) for unit, image in rows}

    def page_ref(n: int) -> dict[str, Any]:
        return {"page": n, **links(layer_page_url(model.slug, layer.name, n, kind))}

    def unit_entry(index: int) -> dict[str, Any]:
        unit, image = found.get(index, (None, None))
        return {
            **unit_ref(model.slug, layer.name, index),
            "label": unit.label if unit else None,
            "image": image_dict(image, unit.stats) if image else None,
        }

    n_rendered = rendered_counts(session, Layer.id, Layer.id == layer.id).get(layer.id, 0)
    return {
        **links(layer_page_url(model.slug, layer.name, number, kind)),
        "model": model_ref(model),
        "layer": {**layer_ref(model, layer), "n_rendered": n_rendered},
        "kind": kind,
        "kinds": [{"kind": k, **links(layer_page_url(model.slug, layer.name, number, k))} for k in kinds],
        "page": {
            "page": number,
            "per_page": per_page,
            "pages": pages,
            "total": layer.n_units,
            "prev": page_ref(number - 1) if number > 1 else None,
            "next": page_ref(number + 1) if number < pages else None,
            "all": [page_ref(n) for n in range(1, pages + 1)],
        },
        "units": [unit_entry(i) for i in range(start, stop)],
    }


def unit_page(session: Session, slug: str, name: str, raw_index: str, per_page: int) -> dict[str, Any]:
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
