"""Layer views on the embedded organism: DeepDream really drives the whole layer, caricatures really align with their
input's activations, both are deterministic for a seed on the CPU and leave the model as they found it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from precompute.loaders import load_tinyvision
from render.hooks import activations
from render.layer_views import ViewConfig, caricature, caricature_score, deepdream, squared_mean

CONFIG = ViewConfig(seed=1)  # the steps and learning rate the job uses: fewer stall on conv2 below plain noise


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_tinyvision()


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A structured input: concentric colour rings, [3, 64, 64] in [0, 1]."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    rings = torch.sin(12 * (x ** 2 + y ** 2).sqrt())  # [64, 64]
    return torch.stack([0.5 + 0.5 * rings, 0.5 - 0.5 * rings, 0.5 + 0.25 * rings.cos()])


def layer_acts(model: torch.nn.Module, layer: str, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return activations(model, {"l": model.get_submodule(layer)}, images)["l"]  # [batch, c, h, w]


@pytest.mark.parametrize("layer", ["conv2", "conv4"])
def test_deepdream_drives_the_layer_far_above_random_and_grey(model: torch.nn.Module, layer: str):
    view = deepdream(model, model.get_submodule(layer), CONFIG)
    assert view.image.shape == (3, 64, 64) and view.image.device.type == "cpu"
    assert 0 <= view.image.min() and view.image.max() <= 1
    noise, grey = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)), torch.full((3, 64, 64), 0.5)
    dream, noise, grey = squared_mean(layer_acts(model, layer, torch.stack([view.image, noise, grey]))).tolist()
    assert dream == pytest.approx(view.objective, rel=1e-4)
    assert dream > 2 * noise and dream > 3 * grey, (dream, noise, grey)


def test_same_seed_same_image_other_seed_other_image(model: torch.nn.Module):
    layer = model.conv3
    first, again = deepdream(model, layer, CONFIG), deepdream(model, layer, CONFIG)
    other = deepdream(model, layer, ViewConfig(steps=CONFIG.steps, seed=2))
    assert torch.equal(first.image, again.image) and first.objective == again.objective
    assert (first.image - other.image).abs().mean() > 0.05


@pytest.mark.parametrize("layer", ["conv1", "conv4"])
def test_caricature_aligns_with_the_input_activations(model: torch.nn.Module, photo: torch.Tensor, layer: str):
    view = caricature(model, model.get_submodule(layer), photo, CONFIG)
    start = caricature(model, model.get_submodule(layer), photo, ViewConfig(steps=0, seed=CONFIG.seed)).image
    noise = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    acts = layer_acts(model, layer, torch.stack([photo, view.image, start, noise])).flatten(1)  # [4, c*h*w]
    cosine = F.cosine_similarity(acts[1:], acts[:1]).tolist()  # result, start, noise against the input
    assert cosine[0] > cosine[1] + 0.1 and cosine[0] > cosine[2] + 0.1, cosine
    # The objective as lucid writes it, recomputed from the activations.
    dot = (acts[1] * acts[0]).sum()
    assert view.objective == pytest.approx((dot * max(cosine[0], 0.1) ** CONFIG.power).item(), rel=1e-4)
    assert view.image.shape == (3, 64, 64) and 0 <= view.image.min() and view.image.max() <= 1
    assert view.params["objective"] == "caricature" and view.params["steps"] == CONFIG.steps


def test_caricature_resizes_its_input_to_the_configured_size(model: torch.nn.Module, photo: torch.Tensor):
    bigger = F.interpolate(photo[None], size=(96, 96), mode="bilinear")[0]
    view = caricature(model, model.conv2, bigger, ViewConfig(steps=4))
    assert view.image.shape == (3, 64, 64) and view.params["input_size"] == [96, 96]


def test_cosine_floor_keeps_anti_aligned_images_from_scoring_high():
    target = torch.ones(1, 4)
    assert caricature_score(-target, target, 1.0).item() == pytest.approx(-4 * 0.1)
    assert caricature_score(2 * target, target, 3.0).item() == pytest.approx(8.0)
    assert caricature_score(2 * target, target, 0.0).item() == pytest.approx(8.0)


def test_views_leave_the_model_as_they_found_it(photo: torch.Tensor):
    model = load_tinyvision().train()
    model.conv1[0].weight.requires_grad_(False)  # a mix of flags, both must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    deepdream(model, model.conv2, ViewConfig(steps=4))
    caricature(model, model.conv2, photo, ViewConfig(steps=4))
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    # Batchnorm running statistics included: the views ran in eval mode.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
