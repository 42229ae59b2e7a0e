"""Every model atlascope knows how to precompute, described without importing torch (so `atlascope models` and the
server-only install can list them). Loaders are named as ``module:function`` and imported only when used.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from precompute.spec import LayerSpec, ModelSpec, Preprocess, WeightsError, WeightSource  # noqa: F401 (re-exported)
from precompute.zoo import ORGANISMS as MICROSCOPE_ORGANISMS
from store.keys import CardKey, LayerKind, ModelKind

ORGANISMS = Path(__file__).parent / "organisms"


TINYVISION = ModelSpec(
    slug="tinyvision",
    title="TinyVision (embedded organism)",
    kind=ModelKind.VISION,
    description="A four-block CNN trained by atlascope on 64x64 images that exist offline: eight procedural pattern "
                "classes (oriented gratings, checkerboards, dots, rings, colour blobs) and crops of nine photographs "
                "shipped inside scikit-image. Small enough to render end to end on a laptop CPU.",
    source="embedded: precompute/organisms/tinyvision.pt, made by `python -m precompute.organisms.train_tinyvision`",
    layers=(
        LayerSpec("conv1", "conv1", "conv", 32, (32, 64, 64)),
        LayerSpec("conv2", "conv2", "conv", 64, (64, 32, 32)),
        LayerSpec("conv3", "conv3", "conv", 96, (96, 16, 16)),
        LayerSpec("conv4", "conv4", "conv", 128, (128, 8, 8)),
    ),
    loader="precompute.loaders:load_tinyvision",
    dataset="precompute.loaders:tinyvision_sample",
    card_file=ORGANISMS / "tinyvision.json",
    preprocess=Preprocess(size=64, resize=64),
    examples="precompute.loaders:tinyvision_examples",
)



def language_layers(n_layer: int, d_model: int, d_mlp: int, d_attn: int) -> tuple[LayerSpec, ...]:
    """A language model's layers in forward order: per block the residual stream it reads, attention's read channels,
    q/k/v channels and write channels, the residual stream between attention and MLP, the MLP's read channels,
    neurons and write channels; then the residual stream the unembedding reads. A layer's name is its hook point's
    (``precompute.lm.model.SparseGPT.hook_points``) and is also its module."""
    widths = {LayerKind.RESID_PRE: d_model, LayerKind.ATTN_IN: d_model, LayerKind.ATTN_Q: d_attn,
              LayerKind.ATTN_K: d_attn, LayerKind.ATTN_V: d_attn, LayerKind.ATTN_OUT: d_model,
              LayerKind.RESID_MID: d_model, LayerKind.MLP_IN: d_model, LayerKind.MLP: d_mlp,
              LayerKind.MLP_OUT: d_model}
    layers = [LayerSpec(f"{block}.{kind}", f"{block}.{kind}", kind.value, width, (width,))
              for block in range(n_layer) for kind, width in widths.items()]
    last = f"{n_layer - 1}.{LayerKind.RESID_POST}"
    return (*layers, LayerSpec(last, last, LayerKind.RESID_POST.value, d_model, (d_model,)))


def _tinylm(variant: str, description: str) -> ModelSpec:
    """An embedded language organism; its layers come from the architecture on its committed card."""
    card_file = ORGANISMS / f"tinylm-{variant}.json"
    arch = json.loads(card_file.read_text())[CardKey.ARCHITECTURE] if card_file.is_file() else None
    layers = language_layers(arch["n_layer"], arch["d_model"], arch["d_mlp"], arch["n_head"] * arch["d_head"]) \
        if arch else ()
    return ModelSpec(
        slug=f"tinylm-{variant}",
        title=f"TinyLM {variant} (embedded organism)",
        kind=ModelKind.LANGUAGE,
        description=description,
        source=f"embedded: precompute/organisms/tinylm-{variant}.pt, made by "
               f"`python -m precompute.organisms.train_tinylm {variant}`",
        layers=layers,
        loader="precompute.loaders:load_tinylm",
        dataset="precompute.lm.corpus:load_heldout",
        tokenizer="precompute.lm.tokenizer:load_tokenizer",
        card_file=card_file if card_file.is_file() else None,
    )


TINYLM_SPARSE = _tinylm("sparse", "A two-block GPT trained by atlascope on Python source that ships with Python and its "
                                  "installed packages, with nearly all of its weights forced to zero as in OpenAI's "
                                  "weight-sparse transformers: each unit reads and writes few others, so its "
                                  "connections can be read one by one.")
TINYLM_DENSE = _tinylm("dense", "The dense twin of TinyLM sparse: the same shape and activation sparsity, ordinary "
                                "dense weights, trained until its held-out loss matched the sparse model's, so the "
                                "two can be compared at equal loss.")

OPENAI_CSP = ModelSpec(
    slug="openai-csp",
    title="OpenAI weight-sparse transformer (released checkpoint)",
    kind=ModelKind.LANGUAGE,
    description="One of the models OpenAI released with \"Weight-sparse transformers have interpretable circuits\": "
                "a GPT trained on Python code with nearly all weights zero. Its layers come from its config.",
    source="your download, in the directory given as --weights DIR: beeg_config.json and final_model.pt from "
           "openai/circuit-sparsity on Hugging Face (models/<name>/), with tinypython_2k's encoder.json and vocab.bpe",
    layers=(),
    loader="precompute.loaders:load_openai_csp",
    dataset="precompute.loaders:openai_csp_sample",
    tokenizer="precompute.lm.openai_checkpoint:load_tokenizer",
)


def openai_csp(weights: Path) -> ModelSpec:
    """A released OpenAI model from its directory (or the downloaded release holding it: ``model_directory``),
    checked (config, weights and tokenizer files, before anything is written) and sized from its config without
    torch. The slug is ``openai-<directory name>`` (``openai-csp_yolo1``), so several released models can share one
    atlas."""
    from precompute.lm.openai_checkpoint import model_directory, read_released, tokenizer_files

    weights = model_directory(weights)
    released = read_released(weights)
    tokenizer_files(weights, released.tokenizer_name)
    c = released.values
    name = weights.resolve().name
    return ModelSpec(
        slug=f"openai-{re.sub(r'[^a-z0-9_-]+', '-', name.lower()).strip('-') or 'csp'}",
        title=f"OpenAI {name} (released weight-sparse checkpoint)",
        kind=ModelKind.LANGUAGE,
        description=f"{OPENAI_CSP.description} {c['n_layer']} blocks, d_model {c['d_model']}, {c['n_head']} heads "
                    f"of {c['d_head']}, d_mlp {c['d_mlp']}, vocabulary {c['vocab_size']}.",
        source=f"{weights}: beeg_config.json and final_model.pt from OpenAI's circuit-sparsity release",
        layers=language_layers(c["n_layer"], c["d_model"], c["d_mlp"], c["n_head"] * c["d_head"]),
        loader=OPENAI_CSP.loader,
        dataset=OPENAI_CSP.dataset,
        tokenizer=OPENAI_CSP.tokenizer,
        weights=weights.resolve(),
    )


REGISTRY: dict[str, ModelSpec] = {spec.slug: spec for spec in (TINYVISION, TINYLM_SPARSE, TINYLM_DENSE, OPENAI_CSP,
                                                                 *MICROSCOPE_ORGANISMS)}
WITH_WEIGHTS = {OPENAI_CSP.slug: openai_csp}  # entries whose weights are a user's directory: spec factories
DEFAULT_MODEL = TINYVISION.slug


def get_model(slug: str, weights: Path | None = None) -> ModelSpec:
    """The registered model; for an entry of ``WITH_WEIGHTS`` the spec of the user's ``weights`` (which it needs).
    An organism with published weights is returned as registered: ``precompute.weights.resolved`` finds them."""
    try:
        spec = REGISTRY[slug]
    except KeyError:
        raise KeyError(f"unknown model {slug!r}; registered: {', '.join(REGISTRY)}") from None
    factory = WITH_WEIGHTS.get(slug)
    if factory is None and weights is not None and spec.weights_source is None:
        raise KeyError(f"model {slug!r} comes with its weights; --weights is for {', '.join(WITH_WEIGHTS)} and the "
                       f"organisms with published weights")
    if factory is not None and weights is None:
        raise KeyError(f"model {slug!r} needs --weights DIR; its weights are {spec.source}")
    return factory(weights) if factory else spec
