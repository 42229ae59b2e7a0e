"""The stage ``search index`` (after contexts and weights for a language model, last for a vision one): the search
index's rows (``precompute.search_index``) for each chosen layer of the run's language model, whose contexts and
logit effects the stages before may just have written, and for every layer of any language model that the index lacks (an atlas made before search existed, a run stopped
before this stage). Counts nothing in the run's progress.

The stages before it run after every plan is made, so this one cannot know from the atlas which of the run's layers
they will change: it plans them all, and a layer whose rows the index already holds (the same digest) is left as it
is, so a rerun writes nothing. Each layer is saved in its own transaction, as short as the layer is small, so a
server reading the atlas meanwhile is held up for a layer at most.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from precompute.registry import LayerSpec
from precompute.search_index import index_layer
from precompute.stages import Job, Plan
from store.keys import ModelKind
from store.schema import Layer
from store.search import unindexed_layers


@dataclass(frozen=True)
class LayerIndex:
    layer_id: int
    model: str
    layer: str

    @property
    def label(self) -> str:
        return f"search index {self.model} {self.layer}"


class SearchStage:
    name = "search index"

    def __init__(self, job: Job, layers: list[LayerSpec]):
        self.job, self.layers = job, layers

    def plan(self, session: Session) -> Plan:
        chosen = [layer.name for layer in self.layers] if self.job.spec.kind == ModelKind.LANGUAGE else []
        own = [LayerIndex(layer_id, self.job.spec.slug, name) for layer_id, name in session.execute(
            select(Layer.id, Layer.name).where(Layer.model_id == self.job.model_id, Layer.name.in_(chosen))
            .order_by(Layer.position))]
        planned = {item.layer_id for item in own}
        return Plan(own + [LayerIndex(layer_id, slug, name) for layer_id, name, _, slug in
                           session.execute(unindexed_layers(session)) if layer_id not in planned])

    def run(self, items: list[LayerIndex]) -> Iterator[tuple[LayerIndex, None]]:
        for item in items:  # nothing to compute: the rows come from the atlas, read in the layer's transaction
            yield item, None

    def save(self, session: Session, item: LayerIndex, result: None) -> int:
        index_layer(session, item.layer_id)
        return 0
