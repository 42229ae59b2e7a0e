"""The JSON twins' shapes: one pydantic model per page, so ``/docs`` documents every field scripts can rely on.

Page builders (``server.pages``) return plain dicts; every page is validated against its model here before it is sent
as JSON or rendered as HTML, so a field the builders add without documenting it fails loudly (``extra="forbid"``)
instead of drifting away from the schema.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Twin(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Linked(Twin):
    url: str = Field(description="The HTML page of this thing.")
    json_url: str = Field(description="Its JSON twin: the same data as the page, at the page's URL plus `.json`.")


class ModelRef(Linked):
    slug: str = Field(description="The model's URL name, e.g. `tinyvision` or `inceptionv1`.")
    title: str
    kind: str = Field(description="`vision` or `language`.")


class LayerRef(Linked):
    name: str = Field(description="Microscope-style op name: `/` and `:` of the TensorFlow name turned into `_`.")
    kind: str = Field(description="What the layer is: `conv`, `mlp.post_act`, `attn.q`, ...")
    shape: list[int] = Field(description="Activation shape for one input, e.g. [channels, height, width].")
    n_units: int
    description: str


class UnitRef(Linked):
    model: str = Field(description="Model slug.")
    layer: str = Field(description="Layer name.")
    index: int = Field(description="Unit number within the layer, from 0.")


class Asset(Twin):
    url: str = Field(description="`/assets/{sha256}{ext}`: immutable, cached for a year.")
    sha256: str = Field(description="SHA-256 of the blob's bytes, which is also its name.")
    width: int | None
    height: int | None
    media_type: str


class UnitImage(Asset):
    kind: str = Field(description="The objective: `channel` (mean over positions) or `neuron` (the centre position).")
    params: dict[str, Any] = Field(description="How it was made: objective, steps, size, seed, lr, transforms, batch, "
                                               "weights_sha256.")
    activation: float | None = Field(description="The unit's objective on the final, untransformed image.")
    times_dataset_max: float | None = Field(description="activation ÷ the largest the dataset sample produced "
                                                        "(channel images only).")
    dataset_z: float | None = Field(description="(activation − dataset mean) ÷ dataset std (channel images only).")


class Progress(Twin):
    """A precompute run's progress, counted in images; updated with every batch the job commits."""

    model_config = ConfigDict(extra="allow")
    state: Literal["running", "interrupted", "finished"] = Field(
        description="`running` while a job holds the atlas's writer lock, `interrupted` if it stopped unfinished.")
    stage: str | None = Field(default=None, description="`stats`, `render` or `done`.")
    planned: int | None = Field(default=None, description="Images the run asked for.")
    kept: int | None = Field(default=None, description="Of those, already in the atlas when it started.")
    todo: int | None = Field(default=None, description="Images it set out to render.")
    done: int | None = Field(default=None, description="Images it has rendered and committed so far.")
    current: str | None = Field(default=None, description="What it is rendering now, e.g. `conv2 neuron`.")


class IndexModel(ModelRef):
    description: str
    n_layers: int
    n_units: int
    n_rendered: int = Field(description="Units with a channel image.")
    job: Progress | None = Field(description="The latest precompute run of this model, unless it finished.")


class IndexPage(Linked):
    format_version: int = Field(description="The atlas format this server reads.")
    writer_active: bool = Field(description="Whether a precompute job is writing to the atlas right now.")
    models: list[IndexModel]


class ModelInfo(ModelRef):
    description: str
    source: str = Field(description="Where the weights came from.")
    card: dict[str, Any] = Field(description="Model card: metrics, classes, weights (file, sha256), training.")


class LayerSummary(LayerRef):
    n_rendered: int = Field(description="Units of this layer with a channel image.")


class RunInfo(Twin):
    id: int
    config: dict[str, Any] = Field(description="The request: layers and unit counts, objectives, render settings.")
    started_at: str
    finished_at: str | None
    progress: Progress


class ModelPage(Linked):
    model: ModelInfo
    layers: list[LayerSummary] = Field(description="In forward order.")
    runs: list[RunInfo] = Field(description="Precompute runs, oldest first: provenance of what the atlas holds.")


class KindLink(Linked):
    kind: str


class PageLink(Linked):
    page: int


class Pagination(Twin):
    page: int
    per_page: int
    pages: int
    total: int = Field(description="Units in the layer.")
    prev: PageLink | None
    next: PageLink | None
    all: list[PageLink]


class GridUnit(UnitRef):
    label: str | None
    image: UnitImage | None = Field(description="The image of the grid's kind, or null if not rendered yet.")


class LayerPage(Linked):
    model: ModelRef
    layer: LayerSummary
    kind: str = Field(description="The image kind this grid shows (`?kind=`).")
    kinds: list[KindLink] = Field(description="Every image kind the layer has.")
    page: Pagination
    units: list[GridUnit]
    writer_active: bool = Field(description="Whether a precompute job is writing to the atlas right now.")


class UnitStats(Twin):
    """What the unit does on the model's dataset sample; empty until the job has measured it."""

    model_config = ConfigDict(extra="allow")
    dataset_mean: float | None = Field(default=None, description="Mean over the sample of the unit's channel mean.")
    dataset_std: float | None = None
    dataset_max: float | None = None
    n: int | None = Field(default=None, description="Sample size.")
    measure: str | None = Field(default=None, description="What was measured, in words.")


class Example(Twin):
    kind: str = Field(description="`top`, `bottom` or `random`.")
    rank: int
    activation: float
    source: dict[str, Any] = Field(description="Provenance and payload: dataset, item, cell for images; tokens and "
                                               "values for text.")
    image: Asset | None


class Edge(Twin):
    kind: str = Field(description="`weight`, `expanded_weight` or `circuit`.")
    weight: float
    unit: UnitRef = Field(description="The unit at the other end.")
    image: Asset | None


class EdgeList(Twin):
    total: int = Field(description="How many connections there are in this direction.")
    shown: list[Edge] = Field(description="The strongest, by |weight|.")


class CircuitMembership(Twin):
    slug: str
    task: str
    target_loss: float
    loss: float
    n_nodes: int
    n_edges: int
    params: dict[str, Any]
    score: float | None = Field(description="This unit's mask logit or attribution in the circuit.")
    graph: Asset | None


class UnitPage(Linked):
    model: ModelRef
    layer: LayerRef
    index: int
    rendered: bool = Field(description="Whether the atlas has any image of this unit yet.")
    writer_active: bool = Field(description="Whether a precompute job is writing to the atlas right now.")
    label: str | None
    stats: UnitStats
    images: list[UnitImage]
    examples: list[Example]
    edges: dict[Literal["in", "out"], EdgeList] = Field(description="`in`: units it reads from; `out`: units that "
                                                                    "read it.")
    circuits: list[CircuitMembership]
    prev: UnitRef | None
    next: UnitRef | None
    up: Linked = Field(description="The page of the layer grid that shows this unit.")


class ErrorDetail(Twin):
    status: int
    message: str = Field(description="What was not found or what is wrong, in words.")


class ErrorBody(Twin):
    error: ErrorDetail


class Health(Twin):
    status: Literal["ok", "damaged", "busy", "interrupted"] = Field(
        description="`interrupted`: a job was killed mid-commit, and the next precompute into the atlas repairs it.")
    message: str | None = Field(description="What is wrong, when status is not ok.")
    models: int | None
    format_version: int
    generation: int = Field(description="SQLite's change counter of the index: it moves with every job commit.")
    writer_active: bool
    integrity: str = Field(description="`ok`, or the first problem SQLite's quick_check reported at start-up.")
