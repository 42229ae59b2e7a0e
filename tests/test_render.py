"""Feature visualisation on the embedded organism: optimisation really drives units, hooks never leak, the forward
pass stops at the target layer, and renders are deterministic on the CPU."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from precompute.loaders import load_tinyvision
from render.featvis import RenderConfig, render_units
from render.images import to_png

CONFIG = RenderConfig(steps=32, size=64, seed=3)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_tinyvision()


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_rendered_images_drive_their_units_far_above_the_dataset(atlas_dir: Path):
    """Every rendered unit's channel activation on its image is well above what dataset images make it do."""
    with sqlite3.connect(f"file:{atlas_dir / 'atlas.db'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT l.name, u.[index], i.activation, json_extract(u.stats, '$.dataset_mean'), "
                          "json_extract(u.stats, '$.dataset_std'), json_extract(u.stats, '$.dataset_max') "
                          "FROM unit_images i JOIN units u ON u.id = i.unit_id JOIN layers l ON l.id = u.layer_id "
                          "WHERE i.kind = 'channel'").fetchall()
    assert len(rows) == 24
    z_scores = []
    for layer, unit, activation, mean, std, top in rows:
        assert activation > 2 * mean and activation > mean + 1.5 * std, (layer, unit, activation, mean, std)
        z_scores.append((activation - mean) / std)
    assert sorted(z_scores)[len(z_scores) // 2] > 3  # the typical unit: more than 3 standard deviations up
    # Most units are driven harder than by any of the dataset images.
    assert sum(act > top for _, _, act, _, _, top in rows) >= 0.6 * len(rows)


def test_neuron_objectives_escape_dead_starts(atlas_dir: Path):
    """Without redirected ReLU gradients and a stride-aligned pad, about half of these stayed at exactly zero."""
    with sqlite3.connect(f"file:{atlas_dir / 'atlas.db'}?mode=ro", uri=True) as db:
        acts = [a for (a,) in db.execute("SELECT activation FROM unit_images WHERE kind = 'neuron'")]
    assert len(acts) == 24
    assert sum(a > 0 for a in acts) >= 0.9 * len(acts)  # a few border units cannot fire at the centre at all


def test_redirected_relu_changes_gradients_not_values(model: torch.nn.Module):
    from render.relu import redirected_relus

    x = torch.full((1, 3, 64, 64), 0.5, requires_grad=True)
    plain = model.conv4(model.pool(model.conv3(model.pool(model.conv2(model.pool(model.conv1(x)))))))
    with redirected_relus(model):
        redirected = model.conv4(model.pool(model.conv3(model.pool(model.conv2(model.pool(model.conv1(x)))))))
    assert torch.equal(plain, redirected) and hook_count(model) == 0
    assert not any("forward" in m.__dict__ for m in model.modules())  # every ReLU's own forward is back
    dead = (plain[0, :, 4, 4] == 0).nonzero()[0, 0]  # a unit switched off at the centre of a flat grey image
    # Gradients of the loss that featvis minimises: minus the activation.
    grad_plain, = torch.autograd.grad(-plain[0, dead, 4, 4], x, retain_graph=True)
    grad_redirected, = torch.autograd.grad(-redirected[0, dead, 4, 4], x, retain_graph=True)
    assert grad_plain.abs().sum() == 0 < grad_redirected.abs().sum()
    alive = (plain[0, :, 4, 4] > 0).nonzero()[0, 0]  # a unit that gets ordinary gradients keeps them
    assert torch.equal(torch.autograd.grad(plain[0, alive, 4, 4], x)[0],
                       torch.autograd.grad(redirected[0, alive, 4, 4], x)[0])


def test_images_record_how_they_were_made(atlas_dir: Path):
    with sqlite3.connect(f"file:{atlas_dir / 'atlas.db'}?mode=ro", uri=True) as db:
        params = [p for (p,) in db.execute("SELECT params FROM unit_images")]
    import json

    for p in map(json.loads, params):
        assert p["objective"] in ("channel", "neuron") and p["steps"] == 128 and p["size"] == 64
        assert p["seed"] == 0 and p["param"] == "fft+decorrelate" and len(p["transforms"]) == 5
        assert p["relu_gradient"] == "redirected for the first 32 steps"
        assert len(p["weights_sha256"]) == 64


def test_no_hook_outlives_a_render(model: torch.nn.Module):
    assert hook_count(model) == 0
    render_units(model, model.conv2, [0, 1], "channel", RenderConfig(steps=2))
    assert hook_count(model) == 0


def test_forward_stops_at_the_target_layer(model: torch.nn.Module):
    later = []
    handle = model.conv3.register_forward_hook(lambda *_: later.append(1))
    try:
        render_units(model, model.conv2, [0], "neuron", RenderConfig(steps=3))
    finally:
        handle.remove()
    assert later == []


def test_render_is_deterministic_and_batch_slots_are_units(model: torch.nn.Module):
    first = render_units(model, model.conv3, [5, 9, 11], "channel", CONFIG)
    second = render_units(model, model.conv3, [5, 9, 11], "channel", CONFIG)
    assert first.images.shape == (3, 3, 64, 64)
    assert [to_png(i) for i in first.images] == [to_png(i) for i in second.images]
    assert torch.equal(first.activations, second.activations)
    assert first.params["batch"] == [5, 9, 11] and first.params["objective"] == "channel"
    # Slot b was optimised for units[b]: it drives that unit harder than the other slots' images do.
    with torch.no_grad():
        acts = model.conv3(model.pool(model.conv2(model.pool(model.conv1((first.images - model.mean) / model.std)))))
    means = acts.mean(dim=(-2, -1))[:, [5, 9, 11]]  # [slot, unit]
    assert torch.equal(means.argmax(dim=0), torch.arange(3))


def test_render_leaves_the_model_as_it_was(model: torch.nn.Module):
    model.train()
    try:
        render_units(model, model.conv1, [0], "channel", RenderConfig(steps=1))
        assert model.training and all(p.requires_grad for p in model.parameters())
    finally:
        model.eval()
