"""``/models/{model}/{layer}``: one page of a layer's units, as a grid of images of one kind (``?kind=``) for a vision
model, or as a table of activation statistics for a language model, in the order ``?sort=`` and ``?order=`` ask for.
Each kind's page has only its own fields (``server.twins.VisionLayerPage``, ``LanguageLayerPage``): a language layer
has no images, so no image kinds, thumbnails or layer views.
A vision grid shows each unit's feature visualisation or, with ``?thumbnail=example``, the crop of its top dataset
example (to check one against the other across a layer), under the layer's own pictures (DeepDream, caricatures).

Sorting happens here rather than in the browser, so that it spans every page of a layer with thousands of units and
the JSON twin lists the same rows in the same order as the HTML.
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.errors import BadRequest, NotFound
from server.pages.common import (
    THUMB_KIND, echo, find_layer, find_model, image_dict, layer_ref, model_ref, parse_page, parse_unit,
    rendered_counts, stat, unit_ref, untrained,
)
from server.pages.vision import layer_views, top_crops
from server.urls import DEFAULT_SORT, EXAMPLE, THUMBNAILS, json_url, layer_page_url, links, unit_url
from store.keys import ModelKind, Stat
from store.schema import Layer, Unit, UnitImage

# What a layer's units can be sorted by, with the order each sorts in by default: the biggest numbers first.
SORTS = {DEFAULT_SORT: "asc"}
LANGUAGE_SORTS = {**SORTS, Stat.DENSITY.value: "desc", Stat.MAX.value: "desc"}
ORDERS = ("asc", "desc")


def layer_page(session: Session, slug: str, name: str, page: str, per_page: int, kind: str, sort: str,
               order: str | None, thumbnail: str, writer_active: bool) -> dict[str, Any]:
    if thumbnail not in THUMBNAILS:
        raise BadRequest(f"thumbnail {echo(thumbnail)} is not one a layer grid shows: featvis (each unit's feature "
                         "visualisation, the default) or example (its top dataset example)")
    model = find_model(session, slug)
    layer = find_layer(session, model, name)
    language = model.kind == ModelKind.LANGUAGE
    kinds = [THUMB_KIND] if language else sorted({THUMB_KIND, *session.scalars(
        select(UnitImage.kind).join(Unit).where(Unit.layer_id == layer.id).distinct())})
    if kind not in kinds:
        raise NotFound(f"image kind {echo(kind)} not found in layer {layer.name!r}; "
                       + ("a language model's layers have no images" if language else f"it has: {', '.join(kinds)}"))
    sorts = LANGUAGE_SORTS if language else SORTS
    if sort not in sorts:
        raise NotFound(f"sort {echo(sort)} not found: layer {layer.name!r} sorts by {', '.join(sorts)}")
    if order is not None and order not in ORDERS:
        raise NotFound(f"order {echo(order)} not found: it is asc or desc")
    order = order or sorts[sort]
    pages = max(1, math.ceil(layer.n_units / per_page))
    number = parse_page(page, pages)
    start, stop = (number - 1) * per_page, min(number * per_page, layer.n_units)
    indices = sorted_indices(session, layer, sort, order)[start:stop]

    def url(n: int, k: str = kind, by: str = sort, direction: str = order, shows: str = thumbnail) -> str:
        return layer_page_url(model.slug, layer.name, n, k, by, None if direction == sorts[by] else direction, shows)

    def page_ref(n: int) -> dict[str, Any]:
        return {"page": n, **links(url(n))}

    def sort_link(by: str) -> dict[str, Any]:
        flipped = ORDERS[1 - ORDERS.index(order)] if by == sort else sorts[by]
        return {"sort": by, "order": flipped, "current": by == sort, **links(url(1, by=by, direction=flipped))}

    n_rendered = rendered_counts(session, Layer.id, Layer.id == layer.id).get(layer.id, 0)
    found = page_units(session, layer, indices, kind)
    crops = top_crops(session, layer, indices) if thumbnail == EXAMPLE and not language else {}

    def entry(index: int) -> dict[str, Any]:
        unit, image = found.get(index, (None, None))
        return table_row(unit) if language else grid_cell(unit, image, crops.get(index))
    common = {
        **links(url(number)),
        "model": model_ref(model),
        "untrained": untrained(model),
        "layer": {**layer_ref(model, layer), "n_rendered": n_rendered},
        "sort": sort,
        "order": order,
        "sorts": [sort_link(by) for by in sorts],
        "page": {
            "page": number,
            "per_page": per_page,
            "pages": pages,
            "total": layer.n_units,
            "prev": page_ref(number - 1) if number > 1 else None,
            "next": page_ref(number + 1) if number < pages else None,
            "all": [page_ref(n) for n in range(1, pages + 1)],
        },
        "units": [{**unit_ref(model.slug, layer.name, i), **entry(i)} for i in indices],
        "writer_active": writer_active,
    }
    if language:
        return common
    return {
        **common,
        "kind": kind,
        "kinds": [{"kind": k, **links(url(number, k))} for k in kinds],
        "thumbnail": thumbnail,
        "thumbnails": [{"thumbnail": shows, "current": shows == thumbnail, **links(url(number, shows=shows))}
                       for shows in THUMBNAILS],
        "views": layer_views(session, layer),
    }


def sorted_indices(session: Session, layer: Layer, sort: str, order: str) -> list[int]:
    """Every unit index of the layer in the order asked for. Units with the statistic come first, sorted by it (ties
    by index); the rest (not measured yet, or no row at all) follow by index, whatever the order."""
    if sort == DEFAULT_SORT:
        indices = range(layer.n_units)
        return list(reversed(indices) if order == "desc" else indices)
    key = stat(Stat(sort))
    measured = list(session.scalars(select(Unit.index).where(Unit.layer_id == layer.id, key.is_not(None))
                                    .order_by(key.desc() if order == "desc" else key.asc(), Unit.index)))
    rest = sorted(set(range(layer.n_units)).difference(measured))
    return measured + rest


def page_units(session: Session, layer: Layer, indices: list[int], kind: str) -> dict[int, tuple[Unit, UnitImage]]:
    """The rows of these units with their image of ``kind`` (or None), by index; units without a row are missing."""
    query = (select(Unit, UnitImage)
             .outerjoin(UnitImage, (UnitImage.unit_id == Unit.id) & (UnitImage.kind == kind))
             .where(Unit.layer_id == layer.id, Unit.index.in_(indices)))
    return {unit.index: (unit, image) for unit, image in session.execute(query)}


def grid_cell(unit: Unit | None, image: UnitImage | None, example: dict[str, Any] | None) -> dict[str, Any]:
    """Vision: a unit with its image of the grid's kind, and its top example when the grid shows examples."""
    return {"label": unit.label if unit else None, "image": image_dict(image, unit.stats) if image else None,
            "example": example}


def table_row(unit: Unit | None) -> dict[str, Any]:
    """Language models: a unit with its density, max and top tokens (null until measured)."""
    stats = unit.stats if unit else {}
    return {"label": unit.label if unit else None, "density": stats.get(Stat.DENSITY), "max": stats.get(Stat.MAX),
            "top_tokens": stats.get(Stat.TOP_TOKENS) or []}


def jump_url(session: Session, slug: str, name: str, raw: str, twin: bool) -> str:
    """Where ``?unit=N`` on a layer page goes: the unit's page (or its twin), once the unit is known to exist."""
    model = find_model(session, slug)
    layer = find_layer(session, model, name)
    url = unit_url(model.slug, layer.name, parse_unit(layer, raw))
    return json_url(url) if twin else url
