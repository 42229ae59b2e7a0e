"""``/models/{model}/{layer}``: one page of a layer's grid of unit images, of one image kind (``?kind=``)."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.errors import NotFound
from server.pages.common import (
    THUMB_KIND, echo, find_layer, find_model, image_dict, layer_ref, model_ref, parse_page, rendered_counts, unit_ref,
)
from server.urls import layer_page_url, links
from store.schema import Layer, Unit, UnitImage


def layer_page(session: Session, slug: str, name: str, page: str, per_page: int, kind: str,
               writer_active: bool) -> dict[str, Any]:
    model = find_model(session, slug)
    layer = find_layer(session, model, name)
    kinds = sorted({THUMB_KIND, *session.scalars(
        select(UnitImage.kind).join(Unit).where(Unit.layer_id == layer.id).distinct())})
    if kind not in kinds:
        raise NotFound(f"image kind {echo(kind)} not found in layer {layer.name!r}; it has: {', '.join(kinds)}")
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
        "writer_active": writer_active,
    }
