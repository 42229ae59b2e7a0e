"""Microscope's eight organisms: registered with Microscope's layers and unit counts, each built (random weights,
labelled untrained), precomputed for two units of two layers and served; published weights found offline first,
checked, and a clear error naming the file and its URL when they are not there."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import torch

from precompute.registry import REGISTRY, WeightsError, get_model
from precompute.zoo import ORGANISMS
from store.microscope import MICROSCOPE_LAYERS
from tests.conftest import atlascope, serving, write_class_folders

SLUGS = [spec.slug for spec in ORGANISMS]
# The two cheapest layers of each to precompute in a test: small grids or few units
TEST_LAYERS = {
    "alexnet": ("conv1", "conv2"), "alexnet_caffe_places365": ("conv4", "conv5"),
    "inceptionv1": ("conv2d0", "conv2d1"), "inceptionv1_caffe_places365": ("conv1_7x7_s2", "conv2_3x3_reduce"),
    "vgg19_caffe": ("conv1_1", "conv1_2"), "inceptionv3_slim": ("Conv2d_1a_3x3", "Conv2d_2a_3x3"),
    "inceptionv4_slim": ("Conv2d_1a_3x3", "Conv2d_2a_3x3"),
    "resnetv2_50_slim": ("block1_unit_1_preact", "block1_unit_1"),
}
QUICK = ["--units", "0-1", "--steps", "3", "--size", "48", "--device", "cpu"]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """No network, and empty weight caches: what a fresh machine without downloads has."""
    home = tmp_path_factory.mktemp("caches")
    return {**os.environ, "ATLASCOPE_OFFLINE": "1", "ATLASCOPE_WEIGHTS_DIR": str(home / "weights"),
            "TORCH_HOME": str(home / "torch"), "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def tiny_dataset():
    root = write_class_folders(Path(tempfile.mkdtemp(prefix="atlascope-zoo-dataset-")), per_class=1)  # 17 images
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_models_lists_the_eight_with_microscopes_layers_and_unit_counts():
    listed = {m["slug"]: m for m in json.loads(atlascope("models", "--json").stdout)}
    assert set(SLUGS) <= set(listed) and len(SLUGS) == 8
    inception = listed["inceptionv1"]
    assert [(l["name"], l["units"]) for l in inception["layers"]] == [
        ("conv2d0", 64), ("conv2d1", 64), ("conv2d2", 192), ("mixed3a", 256), ("mixed3b", 480), ("mixed4a", 508),
        ("mixed4b", 512), ("mixed4c", 512), ("mixed4d", 528), ("mixed4e", 832), ("mixed5a", 832), ("mixed5b", 1024)]
    assert inception["units"] == 5804 and inception["input"]["value_range"] == [-117.0, 138.0]
    expected_units = {"alexnet": 1376, "alexnet_caffe_places365": 1376, "inceptionv1_caffe_places365": 5808,
                      "vgg19_caffe": 5504, "inceptionv3_slim": 10448, "inceptionv4_slim": 16736,
                      "resnetv2_50_slim": 19008}
    for slug, units in expected_units.items():
        assert listed[slug]["units"] == units, slug
        assert listed[slug]["microscope"] == slug and listed[slug]["weights"]["url"].startswith("http")
    for slug in SLUGS:  # every Microscope op we redirect lands on a registered layer, and each layer has an op
        layers = {l["name"] for l in listed[slug]["layers"]}
        assert set(MICROSCOPE_LAYERS[slug].values()) <= layers, slug
    assert set(MICROSCOPE_LAYERS["inceptionv1"].values()) == {l["name"] for l in inception["layers"]}


@pytest.mark.parametrize("slug", SLUGS)
def test_registered_shapes_are_the_built_networks(slug):
    spec = replace(get_model(slug), random_weights=True)
    net = spec.load()
    size = spec.preprocess.size
    shapes = {}
    modules = {layer.name: net.get_submodule(layer.module) for layer in spec.layers}
    handles = [m.register_forward_hook(lambda _m, _i, out, n=name: shapes.setdefault(n, tuple(out.shape[1:])) and None)
               for name, m in modules.items()]
    with torch.no_grad():
        net(torch.rand(1, 3, size, size))
    for handle in handles:
        handle.remove()
    assert shapes == {layer.name: layer.shape for layer in spec.layers}


@pytest.fixture(scope="module")
def zoo_atlas(tmp_path_factory, env, tiny_dataset) -> Path:
    """All eight, untrained, two units of two layers each, into one atlas through the CLI."""
    atlas = tmp_path_factory.mktemp("zoo")
    for slug in SLUGS:
        done = atlascope("precompute", slug, "--atlas", str(atlas), "--random-weights", "--dataset",
                         str(tiny_dataset), "--layers", ",".join(TEST_LAYERS[slug]), *QUICK, env=env)
        assert done.returncode == 0, (slug, done.stderr[-2000:])
        assert f"{slug}-random: 4 images rendered" in done.stderr
    return atlas


def test_each_organism_precomputes_untrained_and_serves_labelled_pages(zoo_atlas: Path):
    with serving(zoo_atlas) as url, httpx.Client(base_url=url, timeout=30) as client:
        for slug in SLUGS:
            model = client.get(f"/models/{slug}-random.json").json()
            assert model["model"]["card"]["weights"]["random"] is True, slug
            assert model["untrained"] is True
            for layer in TEST_LAYERS[slug]:
                page = client.get(f"/models/{slug}-random/{layer}/1")
                assert page.status_code == 200 and "Untrained" in page.text, (slug, layer)
                twin = client.get(f"/models/{slug}-random/{layer}/1.json").json()
                assert twin["untrained"] is True and twin["images"], (slug, layer)
                assert twin["images"][0]["params"]["size"] == 48 and twin["examples"], (slug, layer)
            # an untrained model never answers Microscope's links for the trained one
            assert client.get(f"/models/{slug}/{TEST_LAYERS[slug][0]}/1", follow_redirects=False).status_code == 404


def test_missing_weights_name_the_file_its_url_and_where_it_goes(env, tiny_dataset, tmp_path):
    done = atlascope("precompute", "inceptionv3_slim", "--atlas", str(tmp_path / "atlas"), "--dataset",
                     str(tiny_dataset), env=env)
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "inception_v3.tf_in1k.safetensors" in message
    assert "https://huggingface.co/timm/inception_v3.tf_in1k/resolve/main/model.safetensors" in message
    assert f"{env['ATLASCOPE_WEIGHTS_DIR']}/inception_v3.tf_in1k.safetensors" in message
    assert "--random-weights" in message and "ATLASCOPE_OFFLINE" in message
    assert not (tmp_path / "atlas").exists()  # refused before anything was written


def _trained_inceptionv1(path: Path, seed: int = 7) -> Path:
    """A stand-in for lucent's inception5h.pth: InceptionV1's state dict with other (seeded) weights."""
    from render.lucent_compat import inceptionv1

    torch.manual_seed(seed)
    torch.save(inceptionv1().state_dict(), path)
    return path


def test_a_saved_checkpoint_loads_through_weights_and_changes_the_images(env, tiny_dataset, tmp_path, zoo_atlas):
    from precompute.weights import sha256_of

    weights = _trained_inceptionv1(tmp_path / "inception5h.pth")
    atlas = tmp_path / "atlas"
    done = atlascope("precompute", "inceptionv1", "--atlas", str(atlas), "--weights", str(weights), "--dataset",
                     str(tiny_dataset), "--layers", "conv2d0,conv2d1", *QUICK, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    # other weights into the same atlas would mix two networks' images: refused
    other = tmp_path / "other" / "inception5h.pth"
    other.parent.mkdir()
    _trained_inceptionv1(other, seed=8)
    again = atlascope("precompute", "inceptionv1", "--atlas", str(atlas), "--weights", str(other), "--dataset",
                      str(tiny_dataset), "--layers", "conv2d0,conv2d1", *QUICK, env=env)
    assert again.returncode == 2 and f"made with weights of sha256 {sha256_of(weights)}" in again.stderr
    with serving(atlas) as url, serving(zoo_atlas) as random_url:
        model = httpx.get(f"{url}/models/inceptionv1.json").json()
        card = model["model"]["card"]["weights"]
        assert card["sha256"] == sha256_of(weights) and card["found"] == "--weights" and card["random"] is False
        assert model["untrained"] is False
        trained = httpx.get(f"{url}/models/inceptionv1/conv2d1/1.json").json()
        untrained = httpx.get(f"{random_url}/models/inceptionv1-random/conv2d1/1.json").json()
        assert trained["images"][0]["params"]["weights_sha256"] == card["sha256"]
        assert trained["images"][0]["sha256"] != untrained["images"][0]["sha256"]
        # and Microscope's link to it resolves
        moved = httpx.get(f"{url}/models/inceptionv1/conv2d1_0/1", follow_redirects=False)
        assert moved.status_code == 301 and moved.headers["location"].endswith("/models/inceptionv1/conv2d1/1")


def test_weights_are_found_in_the_weights_dir_and_checked_against_the_published_sha256(tmp_path, monkeypatch):
    from precompute.weights import find, sha256_of

    monkeypatch.setenv("ATLASCOPE_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ATLASCOPE_OFFLINE", "1")
    weights = _trained_inceptionv1(tmp_path / "inception5h.pth")
    sha = sha256_of(weights)
    spec = REGISTRY["inceptionv1"]
    found = find(spec)
    assert (found.path, found.sha256, found.how) == (weights, sha, "$ATLASCOPE_WEIGHTS_DIR")
    published = replace(spec, weights_source=replace(spec.weights_source, sha256=sha[:8]))  # torch hub's prefix
    assert find(published).card(published.weights_source)["checked"] is True
    altered = replace(spec, weights_source=replace(spec.weights_source, sha256="0" * 64))
    with pytest.raises(WeightsError, match=f"have sha256 {sha}, not the published 0000"):
        find(altered)
    with pytest.raises(WeightsError, match="no file"):
        find(spec, tmp_path / "elsewhere.pth")


def test_a_checkpoint_that_does_not_fit_names_its_first_mismatched_keys(env, tiny_dataset, tmp_path):
    state = {"conv2d0_pre_relu_conv.weight": torch.zeros(1), "extra.weight": torch.zeros(2)}
    torch.save(state, tmp_path / "inception5h.pth")
    done = atlascope("precompute", "inceptionv1", "--atlas", str(tmp_path / "atlas"), "--weights",
                     str(tmp_path / "inception5h.pth"), "--dataset", str(tiny_dataset), env=env)
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "missing keys: conv2d0_pre_relu_conv.bias" in message and "unexpected keys: extra.weight" in message
    assert "wrong shapes: conv2d0_pre_relu_conv.weight (1,) (needs (64, 3, 7, 7))" in message


def test_dry_run_prints_the_plan_with_a_measured_rate_and_writes_nothing(env, tmp_path):
    atlas = tmp_path / "atlas"
    done = atlascope("precompute", "inceptionv1", "--atlas", str(atlas), "--random-weights", "--dry-run",
                     "--layers", "conv2d0,mixed3a", "--steps", "4096", "--size", "64", "--batch-size", "32", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    text = " ".join(done.stderr.split())
    assert "320 units in 2 layers" in text and "4096 steps at 64 px" in text
    assert "conv2d0: 64 units, 2 batches" in text and "mixed3a: 256 units, 8 batches" in text
    assert "estimated feature-visualisation time" in text
    assert not atlas.exists()
