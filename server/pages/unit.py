"""``/models/{model}/{layer}/{unit}``: everything known about one unit, section by section, with each model kind's
own sections only (``server.twins.VisionUnitPage``, ``LanguageUnitPage``).

Each section (examples, connections, circuits here; a language model's activation, logit effects and contexts in
``server.pages.sections``; a vision unit's crops in ``server.pages.vision``) is one small function of the unit; a unit
that has nothing for a section yet, or is not rendered at all, still answers. A vision unit's connections are its
weights: each carries its kernel picture and the other unit's feature visualisation, so the page can set them side by
side.

A language model's residual read and write channels (pruning's nodes: ``attn.act_in``, ``mlp.act_in``, ``attn.out``,
``mlp.out``) have no weights of their own among the model's edges, which run between residual-stream channels and
q/k/v channels or neurons, with norm gains folded in. Their page links the residual channel they read or add to, and
lists with each circuit that keeps them the circuit's edges at them: the weights that make their links in its graph.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session, aliased

from server.pages import sections
from server.pages.common import (
    THUMB_KIND, asset_dict, circuit_summary, find_layer, find_model, image_dict, layer_ref, model_ref, parse_unit,
    unit_number, unit_ref, untrained,
)
from server.pages.vision import crop
from server.urls import layer_page_url, links, unit_url
from store.keys import ExampleKind, LayerKind, ModelKind
from store.schema import Asset, Circuit, CircuitNode, Edge, Example, Layer, Model, Unit, UnitImage

# Strongest connections listed per direction on a unit page. A sparse language model's unit has a few dozen to a few
# hundred nonzero weights, and a reader wants every one of them; a vision unit has thousands, of which the strongest
# few say enough.
MAX_EDGES = {ModelKind.LANGUAGE: 256}
MAX_EDGES_DEFAULT = 24

# Statements are built once: building a select() costs more than running it on a page this size, and a unit page is
# what a cold cache builds most. ``:unit`` is a unit's id.
LOCATE = (select(Model, Layer, Unit).join(Layer, Layer.model_id == Model.id)
          .outerjoin(Unit, (Unit.layer_id == Layer.id) & (Unit.index == bindparam("index")))
          .where(Model.slug == bindparam("slug"), Layer.name == bindparam("layer")))
IMAGES = select(UnitImage).where(UnitImage.unit_id == bindparam("unit")).order_by(UnitImage.kind)
EXAMPLES = (select(Example, Asset).outerjoin(Asset, Asset.sha256 == Example.asset_sha256)
            .where(Example.unit_id == bindparam("unit"))
            .order_by(Example.kind != ExampleKind.TOP, Example.kind, Example.rank))  # top examples first
CIRCUITS = (select(Circuit, Model, CircuitNode.score).join(CircuitNode, CircuitNode.circuit_id == Circuit.id)
            .join(Model, Model.id == Circuit.model_id)
            .where(CircuitNode.unit_id == bindparam("unit")).order_by(Circuit.slug))
MAX_CIRCUIT_EDGES = 256  # a circuit's edges listed at one of its nodes


def _circuit_edge_statement(here: Any, there: Any) -> Any:
    """The edges of the circuits keeping ``:unit`` that have it at ``here``, with the unit at ``there``, strongest
    first within each circuit."""
    other = aliased(Unit)
    return (select(Edge.circuit_id, Edge.weight, other.index, Layer.name)
            .join(other, other.id == there).join(Layer, Layer.id == other.layer_id)
            .where(here == bindparam("unit"), Edge.circuit_id.in_(bindparam("circuits", expanding=True)))
            .order_by(Edge.circuit_id, func.abs(Edge.weight).desc()))


CIRCUIT_EDGES = {"in": _circuit_edge_statement(Edge.dst_unit_id, Edge.src_unit_id),
                 "out": _circuit_edge_statement(Edge.src_unit_id, Edge.dst_unit_id)}
# The residual-stream layer a read channel reads (through its block's norm) or a write channel adds to, as (block
# offset, kind) in the order tried: the first the model has. The last block's MLP adds to the stream the unembedding
# reads.
RESIDUAL_OF = {LayerKind.ATTN_IN: ((0, LayerKind.RESID_PRE),), LayerKind.MLP_IN: ((0, LayerKind.RESID_MID),),
               LayerKind.ATTN_OUT: ((0, LayerKind.RESID_MID),),
               LayerKind.MLP_OUT: ((1, LayerKind.RESID_PRE), (0, LayerKind.RESID_POST))}


def _edge_statements(here: Any, there: Any) -> tuple[Any, Any]:
    """The strongest of the model's edges at ``here == :unit`` with the unit at ``there`` (and its channel image, if
    it has one), and how many there are. Circuits' edges repeat some of the model's weights, once per circuit; their
    pages list them."""
    other, kernel, thumb, picture = aliased(Unit), aliased(Asset), aliased(UnitImage), aliased(Asset)
    own = (here == bindparam("unit")) & Edge.circuit_id.is_(None)
    strongest = (select(Edge, other.index, Layer.name, Model.slug, kernel, picture)
                 .join(other, other.id == there).join(Layer, Layer.id == other.layer_id)
                 .join(Model, Model.id == Layer.model_id).outerjoin(kernel, kernel.sha256 == Edge.asset_sha256)
                 .outerjoin(thumb, (thumb.unit_id == other.id) & (thumb.kind == THUMB_KIND))
                 .outerjoin(picture, picture.sha256 == thumb.asset_sha256)
                 .where(own).order_by(func.abs(Edge.weight).desc()).limit(bindparam("limit")))
    return strongest, select(func.count()).select_from(Edge).where(own)


EDGES = {"in": _edge_statements(Edge.dst_unit_id, Edge.src_unit_id),  # units this one reads
         "out": _edge_statements(Edge.src_unit_id, Edge.dst_unit_id)}  # units that read this one


def unit_page(session: Session, slug: str, name: str, raw_index: str, per_page: int,
              writer_active: bool) -> dict[str, Any]:
    row = session.execute(LOCATE, {"slug": slug, "layer": name, "index": unit_number(raw_index)}).first()
    if row is None:  # no such model or layer: the lookups say which
        find_layer(session, find_model(session, slug), name)
    model, layer, unit = row
    index = parse_unit(layer, raw_index)
    stats = unit.stats if unit else {}
    language = model.kind == ModelKind.LANGUAGE
    images = session.scalars(IMAGES, {"unit": unit.id}).all() if unit else []
    crops, windows = examples(session, unit) if unit else ([], [])
    limit = MAX_EDGES.get(model.kind, MAX_EDGES_DEFAULT)
    no_edges = {"total": 0, "shown": []}
    common = {
        **links(unit_url(model.slug, layer.name, index)),
        "model": model_ref(model),
        "untrained": untrained(model),
        "layer": layer_ref(model, layer),
        "index": index,
        "rendered": bool(images) or (language and bool(stats)),
        "writer_active": writer_active,
        "label": unit.label if unit else None,
        "edges": {d: edges(session, unit, d, limit, pictured=not language) if unit else no_edges for d in EDGES},
        "prev": unit_ref(model.slug, layer.name, index - 1) if index > 0 else None,
        "next": unit_ref(model.slug, layer.name, index + 1) if index + 1 < layer.n_units else None,
        "up": links(layer_page_url(model.slug, layer.name, index // per_page + 1)),
    }
    if not language:
        return {**common, "stats": stats, "images": [image_dict(image, stats) for image in images], "examples": crops}
    return {
        **common,
        "activation": sections.activation(stats),
        "logit_effects": sections.logit_effects(stats),
        "contexts": sections.contexts(windows, stats),
        "residual": residual_channel(session, model, layer, index),
        "circuits": circuits(session, model, unit) if unit else [],
    }


def examples(session: Session, unit: Unit) -> tuple[list[dict[str, Any]], list[tuple[str, int, float, dict]]]:
    """The unit's image crops (as the twin shows them) and its token windows (for ``sections.contexts``)."""
    crops, windows = [], []
    for ex, asset in session.execute(EXAMPLES, {"unit": unit.id}):
        if sections.is_window(ex.source):
            windows.append((ex.kind, ex.rank, ex.activation, ex.source))
        else:
            crops.append(crop(ex, asset))
    return crops, windows


def edges(session: Session, unit: Unit, direction: str, limit: int, pictured: bool) -> dict[str, Any]:
    """The strongest connections in one direction, and how many there are (counted only when the list is full);
    ``pictured`` (vision) adds each one's kernel picture and the other unit's feature visualisation."""
    strongest, count = EDGES[direction]
    rows = session.execute(strongest, {"unit": unit.id, "limit": limit}).all()

    def edge_dict(edge: Edge, index: int, name: str, slug: str, kernel: Asset | None,
                  thumbnail: Asset | None) -> dict[str, Any]:
        found = {"kind": edge.kind, "weight": edge.weight, "unit": unit_ref(slug, name, index)}
        return {**found, "image": asset_dict(kernel), "thumbnail": asset_dict(thumbnail)} if pictured else found

    return {
        "total": len(rows) if len(rows) < limit else session.scalar(count, {"unit": unit.id}),
        "shown": [edge_dict(*row) for row in rows],
    }


def residual_channel(session: Session, model: Model, layer: Layer, index: int) -> dict[str, Any] | None:
    """The residual-stream channel a read channel reads or a write channel adds to, as a unit reference; None for
    other units, or where the model lacks that layer."""
    block, _, kind = layer.name.partition(".")
    names = [f"{int(block) + offset}.{residual}" for offset, residual in RESIDUAL_OF.get(kind, ())
             if block.isdigit()]
    if not names:
        return None
    widths = dict(session.execute(select(Layer.name, Layer.n_units).where(Layer.model_id == model.id,
                                                                          Layer.name.in_(names))).all())
    name = next((name for name in names if name in widths), None)
    return unit_ref(model.slug, name, index) if name is not None and index < widths[name] else None


def circuits(session: Session, model: Model, unit: Unit) -> list[dict[str, Any]]:
    """The task circuits that keep the unit, with its mask logit in each and the circuit's edges at it."""
    kept = session.execute(CIRCUITS, {"unit": unit.id}).all()
    at_unit: dict[int, list[dict[str, Any]]] = {circuit.id: [] for circuit, _, _ in kept}
    for direction, statement in CIRCUIT_EDGES.items():
        for circuit_id, weight, index, name in session.execute(statement, {"unit": unit.id, "circuits": list(at_unit)}):
            at_unit[circuit_id].append({"direction": direction, "weight": weight,
                                        "unit": unit_ref(model.slug, name, index)})
    return [{**circuit_summary(owner, circuit), "tau": tau,
             "edges": sorted(at_unit[circuit.id], key=lambda edge: -abs(edge["weight"]))[:MAX_CIRCUIT_EDGES]}
            for circuit, owner, tau in kept]
