"""What vision pages show besides feature visualisations: dataset examples as crops, and pictures of whole layers.

A crop is a box into a whole dataset image, which the atlas stores once for every unit that uses it; the twin passes
the box on and the page draws the crop from the whole image, so no crop is ever a file of its own. Layer views
(DeepDream, caricatures of input images) belong to a layer, not a unit, and head its page.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from server.pages.common import asset_dict
from store.keys import CropKey, ExampleKind, LayerImageKind
from store.schema import Asset, Example, Layer, LayerImage, Unit

# Statements built once, as the unit page's are: a layer page of 256 units asks for 256 top examples in one go.
TOP_CROPS = (select(Unit.index, Example, Asset).join(Example, Example.unit_id == Unit.id)
             .outerjoin(Asset, Asset.sha256 == Example.asset_sha256)
             .where(Unit.layer_id == bindparam("layer"), Unit.index.in_(bindparam("indices", expanding=True)),
                    Example.kind == ExampleKind.TOP, Example.rank == 0))
VIEWS = select(LayerImage).where(LayerImage.layer_id == bindparam("layer")).order_by(LayerImage.name)


def crop(example: Example, asset: Asset | None) -> dict[str, Any]:
    """An image example as the twin shows it: its rank and activation, the whole image, and where the crop lies in
    it (``store.keys.CropKey``, null where the job wrote no such key)."""
    return {"kind": example.kind, "rank": example.rank, "activation": example.activation, "image": asset_dict(asset),
            **{key.value: example.source.get(key) for key in CropKey}}


def top_crops(session: Session, layer: Layer, indices: list[int]) -> dict[int, dict[str, Any]]:
    """The top dataset example of each of these units that has one, by unit index: a layer grid's other thumbnail."""
    rows = session.execute(TOP_CROPS, {"layer": layer.id, "indices": indices})
    return {index: crop(example, asset) for index, example, asset in rows}


def layer_views(session: Session, layer: Layer) -> dict[str, Any]:
    """The layer's DeepDream (or None until the job made it) and its caricatures, by input name."""
    views = [{"kind": view.kind, "name": view.name, "image": asset_dict(view.asset), "input": asset_dict(view.source),
              "params": view.params, "activation": view.activation}
             for view in session.scalars(VIEWS, {"layer": layer.id})]
    return {"deepdream": next((v for v in views if v["kind"] == LayerImageKind.DEEPDREAM), None),
            "caricatures": [v for v in views if v["kind"] == LayerImageKind.CARICATURE]}
