"""Load registered models and their dataset samples. Weights are local files: a missing or altered file is an error
that says where the file belongs and how to make it, never a download."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from precompute.registry import TINYVISION, ModelSpec, WeightsError
from precompute.weights import sha256_of


def verified_file(path: Path, sha256: str | None, remedy: str) -> Path:
    """``path``, once it is there and hashes to the card's sha256; otherwise an error saying how to remake it."""
    if not path.is_file():
        raise WeightsError(f"weights not found at {path}. {remedy}")
    if sha256 and sha256_of(path) != sha256:
        raise WeightsError(f"weights at {path} do not match sha256 {sha256} from the model card. {remedy}")
    return path


def verified_state_dict(path: Path, sha256: str | None, remedy: str) -> dict:
    return torch.load(verified_file(path, sha256, remedy), map_location="cpu", weights_only=True)


def load_tinyvision(spec: ModelSpec = TINYVISION) -> torch.nn.Module:
    from precompute.datasets.patterns import CLASSES
    from precompute.organisms.tinyvision import TinyVision

    card = spec.card()
    model = TinyVision(len(CLASSES))
    model.load_state_dict(verified_state_dict(
        TINYVISION.card_file.with_name(card["weights"]["file"]), card["weights"]["sha256"],
        "Recreate it with `python -m precompute.organisms.train_tinyvision`."))
    return model.eval()


def tinyvision_sample() -> torch.Tensor:
    """Held-out images, 30 per class: [510, 3, 64, 64] in [0, 1]."""
    from precompute.datasets.patterns import CLASSES, make_batch
    from precompute.datasets.images import to_tensor

    return to_tensor(make_batch(30 * len(CLASSES), "test", seed=0).images)


@functools.cache
def tinyvision_examples():
    """The held-out images TinyVision's units are ranked on by default: 120 per class (2,040), patterns and photo
    crops, none of them seen in training. Made once per process."""
    from precompute.datasets.images import in_memory
    from precompute.datasets.patterns import CLASSES, make_batch

    return in_memory("tinyvision-heldout", "test", make_batch(120 * len(CLASSES), "test", seed=1).images)


def demo_caricature_input(spec: ModelSpec = TINYVISION):
    """The image the demo caricatures at every layer: scikit-image's photo of Chelsea the cat, whole, as the model's
    input ([size, size, 3] uint8). TinyVision trained on crops of a part of it; the whole photo is new to it."""
    import skimage.data
    from PIL import Image

    from precompute.datasets.images import prepare

    return prepare(Image.fromarray(skimage.data.chelsea()), spec.preprocess)


def load_tinylm(spec: ModelSpec) -> torch.nn.Module:
    """An embedded language organism, checked against the sha256 on its card."""
    from precompute.organisms import tinylm

    verified_file(tinylm.weights_path(spec.slug), spec.card().get("weights", {}).get("sha256"),
                  f"Recreate it with `python -m precompute.organisms.train_tinylm {spec.slug.removeprefix('tinylm-')}`.")
    return tinylm.load(spec.slug)


def load_openai_csp(spec: ModelSpec) -> torch.nn.Module:
    """A released OpenAI weight-sparse model from the spec's ``weights`` directory."""
    from precompute.lm import openai_checkpoint

    try:
        return openai_checkpoint.load(spec.weights)
    except openai_checkpoint.CheckpointError as exc:
        raise WeightsError(str(exc)) from None


def openai_csp_sample(spec: ModelSpec):
    """The held-out sample in the released model's tokenizer (found beside its weights)."""
    from precompute.lm import openai_checkpoint

    try:
        return openai_checkpoint.heldout_sample(spec.weights)
    except openai_checkpoint.CheckpointError as exc:
        raise WeightsError(str(exc)) from None
