"""The JSON twins' shapes: one pydantic model per page, so ``/docs`` documents every field scripts can rely on.

Page builders (``server.pages``) return plain dicts; every page is validated against its model here before it is sent
as JSON or rendered as HTML, so a field the builders add without documenting it fails loudly (``extra="forbid"``)
instead of drifting away from the schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, RootModel, Tag, with_config
from typing_extensions import TypedDict  # pydantic reads typing's own only from Python 3.12


class Twin(BaseModel):
    model_config = ConfigDict(extra="forbid")


UNTRAINED = ("Whether the model's weights are seeded random ones (`atlascope precompute --random-weights`; its card's "
             "`weights.random`): its pictures show the architecture's biases, not learned features, and every page of "
             "it says so in a banner.")


def model_kind(page: Any) -> str:
    """The kind of the model a page is about (``model.kind``): which of a page's two shapes it has."""
    model = page["model"] if isinstance(page, dict) else page.model
    return model["kind"] if isinstance(model, dict) else model.kind


def by_model_kind(vision: type[Twin], language: type[Twin]) -> Any:
    """The type of a page whose fields depend on its model's kind: ``vision`` or ``language``, told apart by
    ``model.kind``, so each kind's twin carries only its own fields (a language layer has no image kinds or
    thumbnails, a vision unit no circuits or token contexts)."""
    return Annotated[Annotated[vision, Tag("vision")] | Annotated[language, Tag("language")],
                     Discriminator(model_kind)]


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
    params: dict[str, Any] = Field(description="How it was made: objective, steps, size, seed, lr, precision (and "
                                               "float32_steps under bfloat16), transforms, batch, weights_sha256.")
    activation: float | None = Field(description="The unit's objective on the final, untransformed image.")
    times_dataset_max: float | None = Field(description="activation ÷ the largest the dataset sample produced "
                                                        "(channel images only).")
    dataset_z: float | None = Field(description="(activation − dataset mean) ÷ dataset std (channel images only).")


class Progress(Twin):
    """A precompute run's progress, counted in images (vision) or units (language); updated with every item the job
    commits, and with a stage's words between items."""

    model_config = ConfigDict(extra="allow")
    state: Literal["running", "interrupted", "finished"] = Field(
        description="`running` while a job holds the atlas's writer lock, `interrupted` if it stopped unfinished.")
    stage: str | None = Field(default=None, description=(
        "The stage at work: vision `stats`, `examples`, `weights`, `layer views`, `render`; language `contexts`, "
        "`weights`, `circuits`; then `search index`; `done` at the end."))
    planned: int | None = Field(default=None, description="Images (units) the run asked for.")
    kept: int | None = Field(default=None, description="Of those, already in the atlas when it started.")
    todo: int | None = Field(default=None, description="Images (units) it set out to make.")
    done: int | None = Field(default=None, description="Images (units) it has made and committed so far.")
    current: str | None = Field(default=None, description=(
        "What it works on now, e.g. `conv2 neuron`, `0.mlp.post_act`, or the stage's latest words: the contexts "
        "pass's tokens, or pruning's sweep step, loss, kept nodes and k search."))
    stage_items: int | None = Field(default=None, description="The stage's items to make (render batches, layers, "
                                                               "tasks).")
    stage_done: int | None = Field(default=None, description="Of them, committed so far.")
    counted: bool | None = Field(default=None, description=(
        "Whether the stage's items add to `done`; false for a stage that counts nothing (`circuits`): its "
        "`stage_items` say how far it is. Null in runs older than these fields."))


class IndexModel(ModelRef):
    description: str
    n_layers: int
    n_units: int
    n_rendered: int = Field(description="Units the job has done: with a channel image (vision) or with statistics "
                                        "(language).")
    job: Progress | None = Field(description="The latest precompute run of this model, unless it finished.")
    n_circuits: int = Field(description="Task circuits of this model (language models), listed on its page.")


class CircuitsLink(Linked):
    """`/circuits`: the tasks that have circuits, each comparing every model's circuit for it."""

    n_tasks: int
    n_circuits: int


class IndexPage(Linked):
    format_version: int = Field(description="The atlas format this server reads.")
    writer_active: bool = Field(description="Whether a precompute job is writing to the atlas right now.")
    models: list[IndexModel]
    circuits: CircuitsLink


class CircuitSummary(Linked):
    """A task circuit of a language model, in a list: the task, its size, and whether it does the task."""

    slug: str = Field(description="The circuit's URL name: the task's name, e.g. `single_double_quote`.")
    task: str
    target_loss: float = Field(description="The task loss (nats) pruning aimed for on the pruning pairs.")
    loss: float = Field(description="The circuit's task loss on the pruning pairs; the lowest reached when the "
                                    "target was not met.")
    met: bool = Field(description="Whether some number of nodes reached the target loss on the pruning pairs.")
    heldout_loss: float | None = Field(description="Task loss on held-out pairs of the circuit alone, the rest "
                                                   "mean-ablated (`faithfulness.circuit_mean.loss`); above "
                                                   "`target_loss` means the circuit does not carry the task on "
                                                   "prompts pruning never saw.")
    n_nodes: int = Field(description="Kept nodes (channels and neurons).")
    n_edges: int = Field(description="Nonzero weights between kept nodes: the paper's measure of circuit size.")


class ModelInfo(ModelRef):
    description: str
    source: str = Field(description="Where the weights came from.")
    card: dict[str, Any] = Field(description=(
        "Model card, as the job wrote it (keys: `store.keys.CardKey`); any key may be missing. Vision: metrics, "
        "classes, training; weights {file, sha256, and for registered organisms and user models url (the "
        "publisher's), found (where the file was found: `--weights`, `$ATLASCOPE_WEIGHTS_DIR`, `torch hub cache`, "
        "`Hugging Face cache`, `downloaded`), checked (its sha256 matched the publisher's), format, random: false, "
        "note}, or for an untrained model {random: true, seed, note}; input {size, resize, value_range, mean, std, "
        "channels: RGB|BGR} (how images became inputs); definition {target, card_file, layers [{name, module, "
        "units, shape}], architecture (the module's repr), parameters} for a model a user brought (`--model`); "
        "microscope {slug}: OpenAI Microscope's name for the model, whose old links redirect here. Language: "
        "architecture {n_layer, d_model, n_head, d_head, d_mlp, vocab_size, block_size, ...}, sparsity {weights: "
        "sparse|dense, target, nonzero_fraction, matrices: {name: {shape, nonzero, fraction}}}, heldout {loss "
        "(nats/token), tokens, corpus_sha256, files}, tasks {name: {accuracy, loss, pairs, chance}}, training "
        "{command, seconds, steps, tokens, threads}, tokenizer {name, vocab_size, sha256}, weights {file, sha256}."))


class LayerSummary(LayerRef):
    n_rendered: int = Field(description="Units of this layer the job has done: with a channel image (vision) or with "
                                        "statistics (language).")


class RunInfo(Twin):
    id: int
    config: dict[str, Any] = Field(description="The request: layers and unit counts, objectives, render settings.")
    started_at: str
    finished_at: str | None
    progress: Progress


class Dataset(Twin):
    """The images a vision model's units were ranked on (its dataset examples): `runs[].config.dataset` of the latest
    run that names one. Any key the job did not write is null."""

    name: str | None = Field(description="The folder's name, or the built-in dataset's.")
    source: str | None = Field(description="The folder's absolute path, or `built-in`.")
    images: int | None = Field(description="Images read.")
    skipped: int | None = Field(description="Files that looked like images and could not be read.")
    sha256: str | None = Field(description="Over the images' relative paths and bytes in path order (built-in: "
                                           "over the tensor bytes).")
    layout: str | None = Field(description="`classes` (one subfolder per class), `flat` or `built-in`.")
    run: int = Field(description="The run (`runs[].id`) it comes from.")


class ModelPageCommon(Linked):
    model: ModelInfo
    untrained: bool = Field(description=UNTRAINED)
    layers: list[LayerSummary] = Field(description="In forward order.")
    runs: list[RunInfo] = Field(description="Precompute runs, oldest first: provenance of what the atlas holds.")


class VisionModelPage(ModelPageCommon):
    """A vision model's page: its card, layers, runs and the dataset its units' examples come from."""

    dataset: Dataset | None = Field(description="The dataset of the latest run that ranked examples; null before "
                                                "one did.")


class LanguageModelPage(ModelPageCommon):
    """A language model's page: its card, layers, runs and task circuits."""

    circuits: list[CircuitSummary] = Field(description="The model's task circuits, by task.")


class ModelPage(RootModel[by_model_kind(VisionModelPage, LanguageModelPage)]):
    """A model's page: `VisionModelPage` or `LanguageModelPage`, as `model.kind` says."""


class KindLink(Linked):
    kind: str


class SortLink(Linked):
    """A column the layer's units can be sorted by, and the link that sorts by it (flipping the order if the page is
    already sorted by it)."""

    sort: str = Field(description="`index`; for language models also `density` and `max`.")
    order: Literal["asc", "desc"] = Field(description="The order the link sorts in.")
    current: bool = Field(description="Whether this page is sorted by this column.")


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


class Crop(Twin):
    """A vision dataset example: the part of a whole dataset image that the unit's receptive field sees at the cell
    of its spatial max. The image is stored once, whole, however many units use it; the crop is a box into it."""

    kind: str = Field(description="`top`: the images of highest activation, highest first; `middle`: images drawn at "
                                  "random from those between the unit's quartiles (`stats.quartiles`), highest first.")
    rank: int = Field(description="From 0, within its kind.")
    activation: float = Field(description="The unit's spatial max on the image.")
    image: Asset | None = Field(description="The whole dataset image, as the model saw it (after resize and crop).")
    dataset: str | None = Field(description="The dataset's name.")
    item: str | None = Field(description="Which image: its path in the dataset folder, or `split/index`.")
    cell: list[int] | None = Field(description="[y, x]: the cell of the unit's activation grid with the max.")
    grid: list[int] | None = Field(description="[h, w]: the size of that activation grid.")
    box: list[int] | None = Field(description="[left, top, right, bottom] in pixels of `image` (right and bottom "
                                              "exclusive): the receptive field at `cell`, clipped to the image.")


class GridUnit(UnitRef):
    """A vision unit in the layer's grid of images."""

    label: str | None
    image: UnitImage | None = Field(description="The image of the grid's kind, or null if not rendered yet.")
    example: Crop | None = Field(description="With `?thumbnail=example`: the unit's top dataset example, or null if "
                                             "it has none yet; null otherwise.")


class ThumbnailLink(Linked):
    """One of the two things a vision layer's grid can show for each unit."""

    thumbnail: Literal["featvis", "example"]
    current: bool = Field(description="Whether this page shows it.")


class LayerView(Twin):
    """A picture of the whole layer (lucid's layer views)."""

    kind: str = Field(description="`deepdream`: an image maximising the mean of the layer's squared activations, "
                                  "from a seeded start; `caricature`: an input image optimised so that the layer's "
                                  "activations align with the input's.")
    name: str = Field(description="\"\" for DeepDream; the input's file stem for a caricature.")
    image: Asset
    input: Asset | None = Field(description="The caricature's input image; null for DeepDream.")
    params: dict[str, Any] = Field(description="How it was made: steps, size, seed, lr, transforms, objective.")
    activation: float | None = Field(description="The objective on the final image.")


class LayerViews(Twin):
    deepdream: LayerView | None = Field(description="Null until the job has made it.")
    caricatures: list[LayerView] = Field(description="One per input image, by name.")


class TableUnit(UnitRef):
    """A language-model unit in the layer's table; its numbers are null until the job has measured it."""

    label: str | None
    density: float | None = Field(description="Fraction of held-out tokens where the unit is nonzero.")
    max: float | None = Field(description="Its largest activation on the held-out sample.")
    top_tokens: list[str] = Field(description="The tokens its top contexts peak on, commonest first.")


class LayerPageCommon(Linked):
    model: ModelRef
    untrained: bool = Field(description=UNTRAINED)
    layer: LayerSummary
    sort: str = Field(description="What the units are sorted by (`?sort=`): `index` (default), or for a language "
                                  "model's layer `density` or `max`; units not measured yet come last.")
    order: Literal["asc", "desc"] = Field(description="`?order=`; by default ascending for index, descending "
                                                      "otherwise.")
    sorts: list[SortLink] = Field(description="Every column the units can be sorted by.")
    page: Pagination
    writer_active: bool = Field(description="Whether a precompute job is writing to the atlas right now.")


class VisionLayerPage(LayerPageCommon):
    """A vision layer: its DeepDream and caricatures, and a grid of its units' images."""

    kind: str = Field(description="The image kind the grid shows (`?kind=`).")
    kinds: list[KindLink] = Field(description="Every image kind the layer has.")
    thumbnail: Literal["featvis", "example"] = Field(description=(
        "What the grid shows for each unit (`?thumbnail=`): `featvis` (default), its feature visualisation of "
        "`kind`, in `units[].image`; `example`, the crop of its top dataset example, in `units[].example`. Any "
        "other value is a 400."))
    thumbnails: list[ThumbnailLink] = Field(description="Links switching the grid's thumbnail, keeping the page, "
                                                        "kind and sort.")
    views: LayerViews = Field(description="The layer's DeepDream and caricatures.")
    units: list[GridUnit] = Field(description="This page's units, a grid of images.")


class LanguageLayerPage(LayerPageCommon):
    """A language model's layer: a table of its units' activation statistics (it has no images: `?kind=` other than
    the default is a 404, `?thumbnail=` is ignored)."""

    units: list[TableUnit] = Field(description="This page's units, table rows.")


class LayerPage(RootModel[by_model_kind(VisionLayerPage, LanguageLayerPage)]):
    """A layer's page: `VisionLayerPage` or `LanguageLayerPage`, as `model.kind` says."""


class UnitStats(Twin):
    """What a vision unit's channel does on the model's dataset sample; empty until the job has measured it."""

    model_config = ConfigDict(extra="allow")
    dataset_mean: float | None = Field(default=None, description="Mean over the sample of the unit's channel mean.")
    dataset_std: float | None = None
    dataset_max: float | None = None
    quartiles: list[float] | None = Field(default=None, description="[q25, q50, q75] of the unit's spatial max over "
                                                                    "a seeded sample of the dataset's images: the "
                                                                    "range `middle` examples are drawn from.")
    examples_n: int | None = Field(default=None, description="How many dataset images the examples were ranked over.")
    n: int | None = Field(default=None, description="Sample size.")
    measure: str | None = Field(default=None, description="What was measured, in words.")


class Histogram(Twin):
    edges: list[float] = Field(description="Bin edges, one more than the bins.")
    counts: list[int] = Field(description="Nonzero activations per bin; values beyond the edges are counted in the "
                                          "first or last bin.")
    clipped: int = Field(description="How many values lay beyond the edges.")


class Activation(Twin):
    """A language-model unit's activation at every token of the held-out sample."""

    density: float | None = Field(description="Fraction of tokens where the unit is nonzero.")
    mean: float | None = Field(description="Mean activation over all tokens.")
    max: float | None
    min: float | None
    n: int | None = Field(description="Tokens measured.")
    measure: str | None = Field(description="What was measured, in words.")
    histogram: Histogram | None = Field(description="Of the nonzero activations.")
    top_tokens: list[str] = Field(description="The tokens its top contexts peak on, commonest first.")


class TokenEffect(Twin):
    token: str = Field(description="The token's text: its bytes, each byte that is not part of a whole character "
                                   "written <0xNN>.")
    id: int = Field(description="Its id in the model's vocabulary.")
    value: float = Field(description="The logit change per unit of activation.")


class LogitEffects(Twin):
    """The unembedding (through the final norm's gain) applied to the unit's output direction."""

    promoted: list[TokenEffect] = Field(description="Tokens it pushes up most, strongest first.")
    suppressed: list[TokenEffect] = Field(description="Tokens it pushes down most, strongest first.")


class Context(Twin):
    """A window of held-out text around one token, with the unit's activation at every token."""

    rank: int = Field(description="From 0: top contexts by activation, highest first; random ones in sample order.")
    activation: float = Field(description="The activation at the marked token.")
    tokens: list[str] = Field(description="Each token's text (a byte that is not part of a whole character in its "
                                          "token written <0xNN>); joined they give the source text, but for "
                                          "characters split across tokens.")
    values: list[float] = Field(description="The unit's activation at each token.")
    position: int = Field(description="Index in `tokens` of the marked token.")
    document: str | None = Field(description="The held-out file the window comes from.")
    offset: int | None = Field(description="The window's first token in the held-out sample.")
    band: int | None = Field(description="A band context's band: its index in `bands`; null for other contexts.")


class Band(Twin):
    """A quantile band of the unit's activation (as OpenAI's circuit viewer shows them): the tokens between the top
    `above` and the top `within` fractions, and a few contexts drawn at random from them."""

    label: str = Field(description="e.g. `top 0.1%`, `top 1–10%`.")
    above: float = Field(description="Fraction of tokens above the band (0 for the top band).")
    within: float = Field(description="Fraction of tokens at or above the band's low edge.")
    low: float = Field(description="The band's lowest activation: the unit's quantile 1 - `within`, measured on the "
                                   "first few thousand tokens of the pass.")
    high: float | None = Field(description="The band's upper edge, excluded (the next band's `low`); null for the top "
                                           "band, which reaches the unit's max.")
    share: float = Field(description="The fraction of a random sample of all tokens measured (the random contexts' "
                                     "pool) that fell in the band: what the edges really hold.")
    contexts: list[Context] = Field(description="Tokens drawn at random (seeded) from the pool's tokens in the band, "
                                                "in sample order; empty where none fell in it.")


class Contexts(Twin):
    scale: float = Field(description="The largest |activation| of the unit (its max or min, or the contexts' own): "
                                     "pages shade each token by value ÷ scale.")
    top: list[Context] = Field(description="The highest-activating contexts, highest first.")
    bottom: list[Context] | None = Field(description="The most negative contexts, lowest first: empty for a unit never "
                                                     "below 0; null in an atlas made before they were measured.")
    random: list[Context] = Field(description="Contexts drawn at random from the tokens where the unit is nonzero.")
    bands: list[Band] | None = Field(description="Quantile bands, highest first; null in an atlas made before they "
                                                 "were measured.")


class Edge(Twin):
    weight: float = Field(description="Language models: the weight, with the gain of a norm it reads through folded "
                                      "in. Vision: the L2 norm of the [h, w] kernel (batchnorm folded in) signed by "
                                      "the kernel's sum.")
    unit: UnitRef = Field(description="The unit at the other end.")


class VisionEdge(Edge):
    kind: str = Field(description="`weight` (direct) or `expanded_weight` (through pooling, branches or residuals: "
                                  "nonlinearities replaced by identity).")
    image: Asset | None = Field(description="The kernel, drawn in diverging colours (a few pixels a side: draw it "
                                            "scaled up, pixelated).")
    thumbnail: Asset | None = Field(description="The other unit's `channel` feature visualisation, if rendered.")


class LanguageEdge(Edge):
    kind: str = Field(description="`weight`: a weight of the model's matrices. A circuit's own edges are listed "
                                  "with the circuit (`circuits[].edges`) and on its page.")


class VisionEdgeList(Twin):
    total: int = Field(description="How many connections there are in this direction.")
    shown: list[VisionEdge] = Field(description="The strongest 24, by |weight|.")


class LanguageEdgeList(Twin):
    total: int = Field(description="How many connections there are in this direction.")
    shown: list[LanguageEdge] = Field(description="The strongest 256, by |weight| (every nonzero weight of a sparse "
                                                  "model).")


class UnitCircuitEdge(Twin):
    """One of a circuit's edges at this unit: a weight between it and another node the circuit keeps."""

    direction: Literal["in", "out"] = Field(description="`in`: the other node is read by this one; `out`: it reads "
                                                        "this one.")
    weight: float = Field(description="The weight, as the circuit's page draws it.")
    unit: UnitRef = Field(description="The node at the other end.")


class CircuitMembership(CircuitSummary):
    """A circuit that keeps this unit."""

    tau: float | None = Field(description="This unit's learned mask logit in the circuit: kept nodes have tau > 0, "
                                          "and pruning kept the nodes of highest tau.")
    edges: list[UnitCircuitEdge] = Field(description=(
        "The circuit's edges at this unit, strongest |weight| first (at most 256): the weights that make its links in "
        "the circuit's graph. A residual read or write channel (`attn.act_in`, `mlp.act_in`, `attn.out`, `mlp.out`) "
        "has no weights of its own in `edges`: these are its connections."))


class UnitPageCommon(Linked):
    model: ModelRef
    untrained: bool = Field(description=UNTRAINED)
    layer: LayerRef
    index: int
    rendered: bool = Field(description="Whether the job has done this unit: an image of it (vision) or its "
                                        "statistics (language).")
    writer_active: bool = Field(description="Whether a precompute job is writing to the atlas right now.")
    label: str | None
    prev: UnitRef | None
    next: UnitRef | None
    up: Linked = Field(description="The page of the layer grid that shows this unit.")


class VisionUnitPage(UnitPageCommon):
    """A vision unit: its images, dataset examples, weights and dataset statistics."""

    stats: UnitStats = Field(description="The channel's dataset statistics; empty until measured.")
    images: list[UnitImage]
    examples: list[Crop] = Field(description="Dataset examples, `top` ones by rank, then `middle` ones.")
    edges: dict[Literal["in", "out"], VisionEdgeList] = Field(description="`in`: units of the previous layer it "
                                                                          "reads; `out`: units of the next layer "
                                                                          "that read it.")


class LanguageUnitPage(UnitPageCommon):
    """A language model's unit: its activation statistics, logit effects, token contexts, weights and circuits."""

    activation: Activation | None = Field(description="The unit's activation statistics; null until measured.")
    logit_effects: LogitEffects | None = Field(description="The tokens its output most promotes and suppresses; "
                                                           "null where it writes no residual stream (q, k, v) or "
                                                           "before it is measured.")
    contexts: Contexts | None = Field(description="Token windows it fires on; null if it has none.")
    edges: dict[Literal["in", "out"], LanguageEdgeList] = Field(description=(
        "`in`: units it reads from; `out`: units that read it. A residual read or write channel has none: see "
        "`residual` and `circuits[].edges`."))
    residual: UnitRef | None = Field(description=(
        "For a residual read channel (`attn.act_in`, `mlp.act_in`: the stream through the block's norm) the "
        "residual-stream channel of the same index it reads, for a write channel (`attn.out`, `mlp.out`) the one it "
        "adds to: that channel's page lists the weights (a read channel's with the norm's gain folded in); null for "
        "other units."))
    circuits: list[CircuitMembership] = Field(description="The task circuits that keep this unit, by task, each "
                                                          "with its edges at this unit.")


class UnitPage(RootModel[by_model_kind(VisionUnitPage, LanguageUnitPage)]):
    """A unit's page: `VisionUnitPage` or `LanguageUnitPage`, as `model.kind` says."""


# A circuit's nodes and links come by the thousand, so they are typed dicts rather than models: validated and
# serialised several times faster, and (holding only strings and numbers) left alone by Python's garbage collector,
# which a page of 10,000 models makes run a full collection; extra keys are refused all the same.
item = with_config(ConfigDict(extra="forbid"))


@item
class NodeBrief(TypedDict):
    """What a node's unit does, in short: the graph shows it when the pointer rests on the node, with the unit's first
    top contexts fetched from its own twin (`json_url`'s `contexts.top`)."""

    density: Annotated[float | None, Field(description="Fraction of held-out tokens where the unit is nonzero.")]
    max: Annotated[float | None, Field(description="Its largest activation on the held-out sample.")]
    top_tokens: Annotated[list[str], Field(description="The tokens its top contexts peak on, commonest first.")]


@item
class CircuitNode(TypedDict):
    """A node of a circuit's graph: a channel or neuron of the model, which has its own unit page."""

    model: Annotated[str, Field(description="Model slug.")]
    layer: Annotated[str, Field(description="Layer name.")]
    index: Annotated[int, Field(description="Unit number within the layer, from 0.")]
    url: Annotated[str, Field(description="The unit's page.")]
    json_url: Annotated[str, Field(description="Its JSON twin.")]
    kind: Annotated[str, Field(description="Its layer's kind: `attn.act_in`, `attn.q`, `attn.k`, `attn.v`, "
                                           "`attn.out`, `mlp.act_in`, `mlp.post_act` or `mlp.out`; `resid_pre` for "
                                           "an embedding channel.")]
    column: Annotated[int, Field(description="Its column in the graph, in forward order: 0 for the embeddings, then "
                                             "one per node layer of each block in the order above; the candidates' "
                                             "logits are last.")]
    tau: Annotated[float | None, Field(description="Its learned mask logit; null for the embeddings, which are not "
                                                   "pruned.")]
    brief: Annotated[NodeBrief | None, Field(description="Null while the unit is not measured.")]
    tracer_id: Annotated[str, Field(description="Its `node_id` in the circuit-tracer export, which the page's URL "
                                                "state (`pinnedIds`, `supernodes`, `clerps`) names it by.")]
    rank: Annotated[int | None, Field(description="Its place in the circuit's node order (0 first): the circuit at "
                                                  "k keeps ranks below k; null for the embeddings, and where the "
                                                  "atlas predates stored orders.")]


@item
class Candidate(TypedDict):
    """One of the task's two candidate next tokens, whose logit the circuit's writes reach."""

    token: str
    column: Annotated[int, Field(description="The graph's last column.")]
    tracer_id: Annotated[str, Field(description="Its `node_id` in the circuit-tracer export.")]


@item
class CircuitEdge(TypedDict):
    """A nonzero weight between two kept nodes (read channel to q/k/v, v to attention's write channel, read channel
    to MLP neuron, neuron to the MLP's write channel): what the paper counts as the circuit's size."""

    src_layer: str
    src_index: int
    dst_layer: str
    dst_index: int
    weight: float


@item
class ResidualLink(TypedDict):
    """The residual stream carrying one channel from a kept write (or from the embedding) to a later kept read of the
    same channel: an identity, not a weight, so not an edge of the circuit. Derived by the server."""

    src_layer: Annotated[str, Field(description="An `attn.out` or `mlp.out` layer, or `0.resid_pre`: the embedding.")]
    dst_layer: Annotated[str, Field(description="A later `attn.act_in` or `mlp.act_in` layer.")]
    index: Annotated[int, Field(description="The channel, the same at both ends.")]


@item
class LogitLink(TypedDict):
    """How a candidate's logit reads a kept write channel: its unembedding row through the final norm's gain."""

    layer: str
    index: int
    token: str
    weight: float


class CurvePoint(Twin):
    k: int = Field(description="Nodes kept: the top k by tau.")
    loss: float = Field(description="Task loss on the pruning pairs with only those kept.")


class TraceStep(Twin):
    step: int
    task_loss: float
    kept: int = Field(description="Nodes with tau > 0 at that step.")


class Scores(Twin):
    loss: float | None = Field(description="Task loss, nats.")
    accuracy: float | None = Field(description="Fraction of pairs where the correct token scores higher.")
    agreement: float | None = Field(description="Fraction of pairs where it picks what the full model picks; null "
                                                "for the full model.")


class Faithfulness(Twin):
    """Held-out pairs, never seen by pruning: does the circuit do the task alone, and does the model need it? A
    circuit that was not found has only the full model's scores and the all-ablated baseline."""

    pairs: int | None
    full: Scores | None = Field(description="The whole model.")
    circuit_mean: Scores | None = Field(description="The circuit alone, every other node mean-ablated (as pruned).")
    circuit_zero: Scores | None = Field(description="The circuit alone, every other node zero-ablated.")
    ablated_mean: Scores | None = Field(description="The model without the circuit: only its nodes mean-ablated.")
    all_ablated: Scores | None = Field(description="Every node mean-ablated (k = 0): the baseline a circuit must "
                                                   "beat; null where the atlas predates it.")
    beats_full: bool | None = Field(description="Whether the circuit alone (mean-ablated) has a lower loss than the "
                                                 "full model by more than `interval`.")
    interval: float | None = Field(description="The 95% half-width of the paired per-pair loss difference between "
                                               "the full model and the circuit alone, at `pairs` pairs.")


class EvidenceRow(Twin):
    """One row of the circuit page's evidence table, beside the target."""

    key: Literal["full", "circuit_mean", "circuit_zero", "ablated_mean", "all_ablated", "null"]
    label: str = Field(description="What the row measures, in words.")
    recorded: bool = Field(description="Whether the atlas has it; when not, `note` says why.")
    should_do_task: bool = Field(description="Whether this condition should reach the target (the full model, the "
                                             "circuit alone); its loss above the target is flagged.")
    loss: float | None = Field(description="Task loss, nats: held-out pairs; the null's is its pruning loss.")
    accuracy: float | None
    agreement: float | None = Field(description="How often it picks what the full model picks.")
    note: str | None = Field(description="`no circuit found`, `not recorded`, or for the null whether it found a "
                                         "circuit, its size, and the shuffled model's own scores.")


class BeatsFull(Twin):
    """Whether the circuit alone beats the full model beyond the noise of the pairs measured."""

    flag: bool | None = Field(description="The job's `beats_full`; null where not recorded.")
    margin: float | None = Field(description="The full model's held-out loss minus the circuit alone's.")
    interval: float | None = Field(description="The 95% half-width of that difference at `pairs` pairs.")
    pairs: int | None
    statement: str = Field(description="The comparison in words.")


class NullResult(Twin):
    """The same pruning on a weight-shuffled copy of the model: what pruning finds where there is nothing to find."""

    method: str | None = Field(description="`weight-shuffled`.")
    seed: int | None
    met: bool | None = Field(description="Whether it found a circuit at the target.")
    k: int | None = Field(description="Its nodes, when found.")
    edges: int | None = Field(description="Its edges, when found.")
    loss: float | None = Field(description="Its task loss on the pruning pairs (the best reached when not found).")
    full: Scores | None = Field(description="The shuffled model itself, unpruned.")


class SweepSetting(Twin):
    k_coef: float | None
    lr: float | None
    met: bool | None = Field(description="Whether this setting found a circuit at the target.")
    k: int | None = Field(description="Nodes of its circuit, when found.")
    edges: int | None
    loss: float | None = Field(description="Task loss on the pruning pairs.")
    chosen: bool = Field(description="Whether this is the setting whose circuit the page shows.")


class Sweep(Twin):
    """The pruning settings tried; the circuit is the chosen one's."""

    settings: list[SweepSetting]
    chosen: int | None = Field(description="Index into `settings`; null when none found a circuit.")
    seconds: float | None = Field(description="Time the whole sweep took.")


class Fit(Twin):
    scale: float | None
    shift: float | None


class Calibration(Fit):
    """How the candidates' logit difference (first minus second) is read before the task loss: scale x difference +
    shift, fitted on the pruning pairs; the circuit's, and those of the conditions fitted on their own."""

    k: int | None = Field(description="The k it was fitted at: the circuit's, or `best_k` when not found.")
    all_ablated: Fit | None = Field(description="The all-ablated baseline's (k = 0).")
    circuit_zero: Fit | None = Field(description="The circuit alone, zero-ablated (when found).")


class Verdict(Twin):
    choice: str = Field(description="The candidate it scores higher.")
    p_correct: float = Field(description="Probability of the correct candidate, over the two.")


class PairExample(Twin):
    """A held-out pair, with what the full model and the circuit alone make of it."""

    tokens: list[str] = Field(description="The prompt as the model reads it.")
    correct: str
    wrong: str
    full: Verdict | None
    circuit: Verdict | None


class Download(Twin):
    url: str
    media_type: str


class KChoice(Twin):
    k: int
    loss: float | None = Field(description="Task loss on the pruning pairs at this k (the curve's).")
    url: str = Field(description="The circuit page at this k (`?k=`); its twin adds `.json` to the path.")


class KView(Twin):
    """Which k the page shows: the circuit's own, or another k of its curve (`?k=`)."""

    k: int = Field(description="Nodes shown: the first k of the order pruning learned.")
    circuit_k: int = Field(description="The circuit's own k (`n_nodes`): the smallest that met the target.")
    total: int | None = Field(description="Nodes in the whole order (every pruning node of the model); null where "
                                          "the atlas predates stored orders.")
    loss: float | None = Field(description="Task loss on the pruning pairs at k.")
    n_edges: int = Field(description="Edges of the circuit at k: every nonzero weight between its nodes.")
    edges_listed: bool = Field(description="Whether `edges` lists all of them. Past `listed_k` the atlas keeps only "
                                           "the weights among the first `listed_k` nodes (a dense model's order has "
                                           "millions), and a view lists at most the 20,000 strongest.")
    listed_k: int = Field(description="The largest k whose weights the atlas keeps all of.")
    choices: list[KChoice] = Field(description="Every k the page offers, each on the curve (the circuit's among "
                                               "them); only the circuit's own where the atlas predates stored "
                                               "orders.")


class LayerCount(Twin):
    layer: str
    column: int
    nodes: int = Field(description="Nodes of this layer in the circuit at k.")


class GroupAblation(Twin):
    """The circuit at k with one group's nodes also mean-ablated: a bar of the page's per-layer chart."""

    group: str = Field(description="`{block}.attn` or `{block}.mlp`: a block's attention or MLP nodes.")
    nodes: int = Field(description="The group's nodes in the circuit at k.")
    loss: float | None = Field(description="Task loss on the pruning pairs (calibrated, as the curve's) with them "
                                           "ablated; null when the circuit at k has none.")
    delta: float | None = Field(description="`loss` minus the loss at k: how much the circuit needs the group.")


class PairTokens(Twin):
    """A held-out contrastive pair: two prompts from one seed, one answering each of the task's candidates."""

    tokens: list[list[str]] = Field(description="The two prompts as the model reads them: the first candidate's, "
                                                "then the second's.")
    answers: list[str] = Field(description="Each prompt's correct candidate.")
    p_correct: list[float] = Field(description="The full model's probability of each prompt's correct candidate.")


@item
class NodeActivations(TypedDict):
    """A node of the circuit at k, read by the full model at each pair's last position."""

    layer: str
    index: int
    rank: int
    url: Annotated[str, Field(description="The unit's page.")]
    values: Annotated[list[list[float]], Field(description="By pair: [first prompt's, second prompt's].")]


class PairActivations(Twin):
    """Per-example activations: the circuit's nodes on held-out contrastive pairs, in the full model (so they do not
    depend on k), at the last position, where the candidates are scored."""

    pairs: list[PairTokens]
    stored_nodes: int = Field(description="The job read the first this many nodes of the order; a circuit at a "
                                          "larger k shows those.")
    nodes: list[NodeActivations] = Field(description="The nodes of the circuit at k among them, by rank.")


class HeadPattern(Twin):
    """A head whose q, k or v channels the circuit at k keeps: the full model's attention from each pair's last
    position over the prompt."""

    block: int
    head: int
    channels: int = Field(description="Its q, k and v channels in the circuit at k.")
    patterns: list[list[list[float]]] = Field(description="By pair: [first prompt's weights, second's], one per "
                                                          "token of `activations.pairs[i].tokens`.")
    sink: list[list[float]] | None = Field(description="By pair: the weight on the attention sink; null for a model "
                                                       "without one.")


class CircuitPage(CircuitSummary):
    target_loss: float | None = Field(description="The task loss (nats) pruning aims for on the pruning pairs; "
                                                  "null while a circuit is being computed and the run does not say.")
    loss: float | None = Field(description="The circuit's task loss on the pruning pairs; the best reached when "
                                           "not found; null while being computed.")
    n_nodes: int = Field(description="Kept nodes; 0 when no circuit was found (see `best_k`).")
    n_edges: int = Field(description="Nonzero weights between kept nodes; 0 when no circuit was found.")
    status: Literal["found", "not_found", "computing"] = Field(description=(
        "`found`: some k met the target; `not_found`: none did, and the page shows no nodes, only the best loss "
        "reached; `computing`: the atlas has no such circuit yet and the precompute job writing it is finding it."))
    verdict: str = Field(description="The page's headline in words: found with its size, or not found with the best "
                                     "loss reached, and whether the full model solves the task.")
    best_loss: float | None = Field(description="The lowest task loss any k reached on the pruning pairs.")
    best_k: int | None = Field(description="The smallest k reaching it.")
    full_solves: bool | None = Field(description="Whether the full model's held-out loss is within the target; "
                                                 "null when not recorded.")
    writer_active: bool = Field(description="Whether a precompute job is writing to the atlas right now.")
    job: Progress | None = Field(description="While computing: the run finding it, with its progress.")
    model: ModelRef
    compare: Linked = Field(description="Every language model's circuit for this task, side by side.")
    download: Download = Field(description="This circuit as circuit-tracer's graph JSON (nodes, links, metadata), "
                                           "for tools that read that format.")
    nodes: list[CircuitNode] = Field(description="Every kept node, in forward order; empty unless found.")
    embeddings: list[CircuitNode] = Field(description="The embedding's channels (`0.resid_pre`) that feed kept read "
                                                      "channels: drawn as the graph's first column.")
    candidates: list[Candidate]
    edges: list[CircuitEdge] = Field(description="Every edge of the circuit (`n_edges`), strongest |weight| first.")
    drawn_edges: int = Field(description="How many of `edges` (the first, strongest) the page's graph draws.")
    residual: list[ResidualLink] = Field(description="Residual links between kept nodes, and from the embedding.")
    logits: list[LogitLink] = Field(description="Kept write channels to the candidates' logits.")
    curve: list[CurvePoint] = Field(description="Every k the search evaluated, k ascending; the circuit is k = "
                                                "`n_nodes` (when not found, `best_k` is marked).")
    trace: list[TraceStep] = Field(description="Mask training, every tenth step.")
    faithfulness: Faithfulness | None
    evidence: list[EvidenceRow] = Field(description="Full model, circuit alone (mean, zero), circuit ablated, all "
                                                    "ablated (k = 0) and the null, in that order; empty while "
                                                    "computing.")
    beats_full: BeatsFull | None = Field(description="Whether the circuit alone beats the full model beyond noise; "
                                                     "null when no circuit was found.")
    null: NullResult | None = Field(description="The same pruning on a weight-shuffled model; null when not "
                                                "recorded.")
    sweep: Sweep | None = Field(description="The settings pruning tried; null when not recorded.")
    calibration: Calibration | None = Field(description="How the logit difference is read (scale, shift); null "
                                                        "when not recorded.")
    examples: list[PairExample] = Field(description="A few held-out pairs.")
    config: dict[str, Any] = Field(description="How pruning ran: steps, lr, k_coef, init, seed, batch, prune_pairs, "
                                               "eval_pairs, ablation, mean_tokens, nodes_total, seconds.")
    view: KView | None = Field(description="The k shown (`?k=`): `nodes`, `edges`, `residual`, `logits`, `layers`, "
                                           "`ablations`, `activations` and `heads` are the circuit at `view.k`; null "
                                           "when no circuit was found.")
    layers: list[LayerCount] = Field(description="Nodes per node layer at k, in forward order.")
    ablations: list[GroupAblation] | None = Field(description="Each block's attention and MLP nodes ablated at k; "
                                                              "null where not recorded.")
    activations: PairActivations | None = Field(description="Null where not recorded.")
    heads: list[HeadPattern] | None = Field(description="Null where not recorded.")


class FullScores(Twin):
    loss: float | None = Field(description="The full model's task loss on the held-out pairs, nats.")
    accuracy: float | None


class TaskCircuit(CircuitSummary):
    """One model's circuit for the task, with what tells whether models are compared at matched loss, and whether the
    model solves the task at all."""

    model: ModelRef
    n_nodes: int = Field(description="Kept nodes; 0 when no circuit was found (see `best_k`).")
    n_edges: int = Field(description="Nonzero weights between kept nodes; 0 when no circuit was found.")
    status: Literal["found", "not_found"] = Field(description="Whether some k met the target.")
    full: FullScores | None = Field(description="The full model on the held-out pairs; null when not recorded.")
    full_solves: bool | None = Field(description="Whether the full model's held-out loss is within the target: a "
                                                 "model that does not solve the task has no circuit to compare.")
    best_loss: float | None = Field(description="The lowest task loss any k reached on the pruning pairs.")
    best_k: int | None = Field(description="The smallest k reaching it.")
    said: str = Field(description="In words: `found: N nodes, E edges`, `not found: best loss L at k = K`, or `MODEL "
                                  "does not solve the task (loss L, accuracy A)`.")
    weights: str | None = Field(description="`sparse` or `dense`, from the model card.")
    pretraining_loss: float | None = Field(description="The model's held-out loss on pretraining text, "
                                                       "nats/token, from its card.")
    sizes: list[CircuitSize] = Field(description="The circuit's size at other task losses, from the same node order.")


class CircuitSize(Twin):
    target: float = Field(description="A task loss.")
    k: int = Field(description="Nodes: the smallest k evaluated whose loss on the pruning pairs is at most `target`.")
    edges: int = Field(description="Nonzero weights between those nodes.")


class PairSize(Twin):
    nodes: int
    edges: int


class CircuitPair(Twin):
    """A dense model's circuit against a weight-sparse model's, for the same task, at one task loss: the target when
    both were found there; never when either model does not solve the task."""

    dense: ModelRef
    sparse: ModelRef
    loss: float | None = Field(description="The task loss both compared circuits meet on their pruning pairs: the "
                                           "target when both were found there, else (when both models solve the "
                                           "task) the tightest recorded loss both reach; null when there is none or "
                                           "either model does not solve the task.")
    at_target: bool = Field(description="Whether `loss` is the circuits' target (both found there).")
    dense_size: PairSize | None = Field(description="The dense circuit's size at `loss`.")
    sparse_size: PairSize | None = Field(description="The sparse circuit's size at `loss`.")
    edge_ratio: float | None = Field(description="Dense edges ÷ sparse edges at `loss`; null without a common loss, "
                                                 "when either model does not solve the task, or when the sparse "
                                                 "circuit has no edges.")
    node_ratio: float | None = Field(description="Dense nodes ÷ sparse nodes at `loss`.")
    said: str = Field(description="What the comparison is, in words: both found at the target; which model does not "
                                  "solve the task (no ratio); or which circuit was not found and the loss compared "
                                  "at instead.")


@item
class DrawnNode(TypedDict):
    layer: str
    index: int
    column: Annotated[int, Field(description="Its layer's column, as on the circuit page.")]
    row: Annotated[int, Field(description="Its place in its column, by index.")]


@item
class DrawnEdge(TypedDict):
    src: Annotated[int, Field(description="Index into `nodes`.")]
    dst: Annotated[int, Field(description="Index into `nodes`.")]
    weight: float


class CircuitDrawing(Twin):
    """A circuit at the compared loss, as the side-by-side drawing has it: every node, and its weights (at most
    8,000, the strongest first; `n_edges` counts them all)."""

    model: ModelRef
    url: str = Field(description="Its circuit page at that k.")
    k: int
    n_edges: int
    nodes: list[DrawnNode]
    edges: list[DrawnEdge]
    rows: int = Field(description="Nodes in its fullest column.")


class SideBySide(Twin):
    """A (dense, sparse) pair drawn at one task loss, at one scale: a side is null where the atlas cannot show that
    circuit at the loss (one from before stored node orders, away from the target)."""

    loss: float = Field(description="The task loss both are drawn at (the pair's).")
    at_target: bool
    columns: list[int] = Field(description="The node columns either drawing uses, in forward order.")
    rows: int = Field(description="The fuller of the two drawings' fullest columns: both are drawn this tall.")
    dense: CircuitDrawing | None
    sparse: CircuitDrawing | None


class TaskPage(Linked):
    slug: str = Field(description="The task's name, as the circuits' URLs spell it.")
    task: str
    circuits: list[TaskCircuit] = Field(description="Every model's circuit for the task, by model title.")
    pairs: list[CircuitPair] = Field(description="Every (dense, sparse) pair of those models.")
    drawings: list[SideBySide] = Field(description="Each pair compared at a loss, both circuits drawn side by side at "
                                                   "one scale.")
    up: Linked = Field(description="All tasks.")


class TaskEntry(Linked):
    slug: str
    task: str
    models: list[ModelRef] = Field(description="The models with a circuit for it.")


class TasksPage(Linked):
    tasks: list[TaskEntry] = Field(description="Every task some model has a circuit for, by name.")


class ModelHit(Linked):
    """A model the query names (its slug), or whose slug or title holds the query."""

    kind: Literal["model"]
    model: ModelRef


class LayerHit(Linked):
    """A layer the query names (`MODEL LAYER`, or a layer name), or whose name holds the query."""

    kind: Literal["layer"]
    model: ModelRef
    layer: LayerRef


class TaskCircuitLink(Linked):
    """A model's circuit for the task."""

    model: ModelRef


class TaskHit(Linked):
    """A task some model has a circuit for, whose name holds the query (spaces read as `_`): its comparison page."""

    kind: Literal["task"]
    slug: str
    task: str
    circuits: list[TaskCircuitLink] = Field(description="Each model's circuit for the task, by model title.")


class Fragment(Twin):
    text: str
    match: bool = Field(description="Whether this is the query's match.")


class UnitHit(Linked):
    """A unit the query names (`MODEL LAYER N`, or `LAYER N`), or a language-model unit found in the search index:
    one a single-word query names a token of (the token's text without surrounding whitespace, case folded), or
    whose top contexts hold the query as a phrase."""

    kind: Literal["unit"]
    model: ModelRef
    unit: UnitRef
    peaks: int = Field(description="How many of its top contexts peak on the token the query names.")
    promotes: bool = Field(description="Whether its logit effects promote that token.")
    suppresses: bool = Field(description="Whether its logit effects suppress that token.")
    snippet: list[Fragment] = Field(description="Where the query stands in its top contexts, whitespace shown as "
                                                "single spaces; empty when its contexts do not hold it.")
    top_tokens: list[str] = Field(description="The tokens its top contexts peak on, commonest first.")


Hit = Annotated[ModelHit | LayerHit | TaskHit | UnitHit, Field(discriminator="kind")]


class ResultPages(Twin):
    page: int
    per_page: int
    pages: int
    total: int = Field(description="Results in all.")
    prev: PageLink | None
    next: PageLink | None


class SearchIndex(Twin):
    """Whether the atlas's search index (SQLite FTS5, built by the precompute job) covers its language models."""

    complete: bool = Field(description="Whether every layer of every language model is indexed.")
    missing: list[ModelRef] = Field(description="Language models with layers the index lacks: their units are found "
                                                "by name only.")
    message: str | None = Field(description="What is missing and the command that builds it; null when complete.")


class SearchPage(Linked):
    query: str | None = Field(description="The query as searched (`?q=`, whitespace collapsed); null without one.")
    jump: UnitRef | None = Field(description="The unit the query names, when it names exactly one: the HTML page "
                                             "answers 303 with it.")
    ranked: bool = Field(description="Whether the context hits are ranked by relevance (bm25): words the top "
                                     "contexts of more than `ranked_at_most` units hold are listed in atlas order "
                                     "instead. Token hits are always ranked: most peaks first, then promoted, then "
                                     "suppressed.")
    ranked_at_most: int
    results: list[Hit] = Field(description="Named things first (models, layers, units, then tasks, models and "
                                           "layers whose names hold the query), then units from the search index: "
                                           "token hits, then context hits.")
    page: ResultPages
    index: SearchIndex


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
