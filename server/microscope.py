"""OpenAI Microscope's links, answered: ``/models/inceptionv1/mixed4c_0/447`` is a 301 to our
``/models/inceptionv1/mixed4c/447`` when the atlas holds that model and layer, and a 404 that names the Microscope
name it lacks otherwise.

The table of names is ``store.microscope`` (our model slugs are Microscope's; its layer names are TensorFlow ops with
``/`` and ``:`` as ``_``). ``server.routes`` asks here only when a layer segment is one of those op names
(``store.microscope.microscope_layer``, a dict lookup), so no other request pays for it, and a layer the model really
has under that name is served as itself: a unit URL never changes meaning. Microscope's technique parameters
(``?models.op.technique=feature_vis``, ``?models.technique=deep_dream``; ``store.microscope.technique``) become the
section of our page that shows the same thing: a unit page's ``#feature-visualisation``, ``#examples`` or
``#weights``, a layer page's ``#layer-views`` (DeepDream and caricatures), or a layer grid of top dataset examples
(``?thumbnail=example``) for a layer URL asking for dataset examples; every other query parameter is dropped. A
``.json`` path redirects to the twin, with neither fragment nor query.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.errors import NotFound
from server.pages.common import parse_unit
from server.urls import DEFAULT_KIND, EXAMPLE, json_url, layer_page_url, layer_url, unit_url
from store.microscope import UNIT_TECHNIQUES, microscope_layer, technique
from store.schema import Layer, Model

DATASET_EXAMPLES = UNIT_TECHNIQUES["dataset_examples"]  # the unit section a layer's example grid stands in for


def is_microscope_name(model: str, op: str) -> bool:
    """Whether ``op`` is one of Microscope's op names for its model ``model`` (no database: the table alone)."""
    return microscope_layer(model, op) is not None


def moved_to(session: Session, slug: str, op: str, raw_unit: str | None, query: dict[str, str],
             twin: bool) -> str | None:
    """Where Microscope's URL for ``op`` of model ``slug`` (and unit ``raw_unit``) lives in this atlas: the canonical
    URL to redirect to, or None when the model has a layer of its own named ``op`` (serve that). NotFound, naming the
    Microscope name, when the atlas lacks the model or the layer, or the unit is not one of the layer's."""
    ours = microscope_layer(slug, op)
    if ours is None:
        return None
    model = session.scalar(select(Model).where(Model.slug == slug))
    if model is None:
        raise NotFound(f"model {slug} (a Microscope organism) is not in this atlas; "
                       f"`atlascope precompute {slug} --atlas DIR --dataset IMAGES` adds it")
    layers = {layer.name: layer for layer in session.scalars(
        select(Layer).where(Layer.model_id == model.id, Layer.name.in_((op, ours))))}
    if op in layers:
        return None
    layer = layers.get(ours)
    if layer is None:
        raise NotFound(f"Microscope's {slug} layer {op} (our {ours}) is not in this atlas; "
                       f"`atlascope precompute {slug} --layers {ours} ...` adds it")
    index = None
    if raw_unit is not None:
        try:
            index = parse_unit(layer, raw_unit)
        except NotFound as exc:
            raise NotFound(f"{exc.detail}; Microscope's {slug} layer {op} is our {layer.name}") from None
    if twin:
        return json_url(layer_url(slug, layer.name) if index is None else unit_url(slug, layer.name, index))
    scope, section = technique(query) or (None, None)
    if scope == "layer":
        return f"{layer_url(slug, layer.name)}#{section}"
    if index is not None:
        return unit_url(slug, layer.name, index) + (f"#{section}" if section else "")
    if section == DATASET_EXAMPLES:
        return layer_page_url(slug, layer.name, 1, DEFAULT_KIND, thumbnail=EXAMPLE)
    return layer_url(slug, layer.name)
