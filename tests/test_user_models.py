"""A model a user brings (``--model package.module:factory``) with a checkpoint goes through precompute and serve
with discovered layers, its definition recorded in the atlas; bad targets, cards and checkpoints are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
import torch

from tests.conftest import SMALL_DATASET, atlascope, serving
from tests.user_model import small_cnn

TARGET = "tests.user_model:small_cnn"
QUICK = ["--units", "0-1", "--steps", "3", "--size", "32", "--device", "cpu", "--dataset", str(SMALL_DATASET)]
ENV = {**os.environ, "ATLASCOPE_OFFLINE": "1"}


def _checkpoint(path: Path, seed: int = 11, whole: bool = False) -> Path:
    torch.manual_seed(seed)
    net = small_cnn()
    torch.save(net if whole else net.state_dict(), path)
    return path


def test_layers_lists_candidates_with_shapes_and_the_default_choice():
    done = atlascope("layers", "--model", TARGET, "--json", env=ENV)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["module"], r["kind"], r["shape"], r["default"]) for r in rows] == [
        ("0.0.0", "conv", [8, 224, 224], False), ("0.0", "block", [8, 112, 112], True),
        ("0.1.0", "conv", [16, 112, 112], False), ("0.1", "block", [16, 56, 56], True),
        ("0.2.0", "conv", [24, 56, 56], False), ("0.2", "block", [24, 28, 28], True)]
    resnet = json.loads(atlascope("layers", "--model", "torchvision:resnet18", "--json", env=ENV).stdout)
    assert [r["module"] for r in resnet if r["default"]] == [f"layer{s}.{b}" for s in range(1, 5) for b in (0, 1)]


@pytest.fixture(scope="module")
def user_atlas(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("user")
    weights = _checkpoint(root / "small.pt")
    done = atlascope("precompute", "--model", TARGET, "--weights", str(weights), "--atlas", str(root / "atlas"),
                     *QUICK, env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "small_cnn: 6 images rendered" in done.stderr
    return root / "atlas", weights


def test_a_user_model_goes_through_precompute_and_serve_with_discovered_layers(user_atlas):
    from precompute.weights import sha256_of

    atlas, weights = user_atlas
    with serving(atlas) as url, httpx.Client(base_url=url, timeout=30) as client:
        model = client.get("/models/small_cnn.json").json()
        card = model["model"]["card"]
        assert [layer["name"] for layer in model["layers"]] == ["0.0", "0.1", "0.2"]
        assert card["definition"]["target"] == TARGET and "Block" in card["definition"]["architecture"]
        assert card["definition"]["parameters"] == sum(p.numel() for p in small_cnn().parameters())
        assert card["weights"]["sha256"] == sha256_of(weights) and model["untrained"] is False
        assert card["input"]["mean"] == [0.485, 0.456, 0.406]
        unit = client.get("/models/small_cnn/0.1/1.json").json()
        assert unit["images"] and unit["examples"] and unit["stats"]
        assert unit["images"][0]["params"]["weights_sha256"] == sha256_of(weights)
        assert client.get("/models/small_cnn/0.1/1").status_code == 200
        page = client.get("/models/small_cnn").text
        assert TARGET in page


def test_a_card_names_the_model_its_input_and_layers_and_a_whole_module_checkpoint_loads(tmp_path):
    card = tmp_path / "card.toml"
    card.write_text('slug = "my-cnn"\ntitle = "My CNN"\ndescription = "Three blocks."\n'
                    'layers = [{name = "block2", module = "0.1"}]\n'
                    '[input]\nsize = 40\nmean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]\n')
    weights = _checkpoint(tmp_path / "whole.pt", whole=True)
    done = atlascope("precompute", "--model", TARGET, "--card", str(card), "--weights", str(weights), "--atlas",
                     str(tmp_path / "atlas"), *QUICK, env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    with serving(tmp_path / "atlas") as url:
        model = httpx.get(f"{url}/models/my-cnn.json").json()
    assert model["model"]["title"] == "My CNN" and [l["name"] for l in model["layers"]] == ["block2"]
    assert model["layers"][0]["shape"] == [16, 10, 10]  # 40 px in, two halvings by block2's output
    assert model["model"]["card"]["input"]["size"] == 40


@pytest.mark.parametrize("args, message", [
    (["--model", "tests.user_model:nothing"], "module 'tests.user_model' has no 'nothing'"),
    (["--model", "tests.no_such_module:f"], "cannot import 'tests.no_such_module'"),
    (["--model", "torchvision:resnet999", "--random-weights"], "torchvision has no model 'resnet999'"),
    (["--model", TARGET], "give its weights with --weights CKPT"),
    (["--model", TARGET, "--weights", "/nonexistent.pt"], "--weights /nonexistent.pt: no such file"),
    (["tinyvision", "--model", TARGET], "name one model"),
    (["tinyvision", "--random-weights"], "--random-weights is for the registered organisms"),
])
def test_bad_user_models_exit_2_before_writing(tmp_path, args, message):
    done = atlascope("precompute", *args, "--atlas", str(tmp_path / "atlas"), *QUICK, env=ENV)
    assert done.returncode == 2, done.stderr
    assert message in " ".join(done.stderr.split())
    assert not (tmp_path / "atlas").exists()


def test_mismatched_checkpoints_and_cards_name_what_is_wrong(tmp_path):
    torch.save({"0.0.0.weight": torch.zeros(8, 3, 3, 3), "head.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    done = atlascope("precompute", "--model", TARGET, "--weights", str(tmp_path / "bad.pt"), "--atlas",
                     str(tmp_path / "atlas"), *QUICK, env=ENV)
    assert done.returncode == 2
    text = " ".join(done.stderr.split())
    assert "missing keys: 0.0.0.bias, 0.0.1.weight, 0.0.1.bias, 0.0.1.running_mean, 0.0.1.running_var and" in text
    assert "unexpected keys: head.weight" in text
    card = tmp_path / "card.toml"
    card.write_text('layers = ["0.9"]\n')
    done = atlascope("precompute", "--model", TARGET, "--random-weights", "--card", str(card), "--atlas",
                     str(tmp_path / "atlas"), *QUICK, env=ENV)
    assert done.returncode == 2 and "layer '0.9' is not an image-shaped hook point" in done.stderr
    card.write_text('colour = "red"\n')
    done = atlascope("precompute", "--model", TARGET, "--random-weights", "--card", str(card), "--atlas",
                     str(tmp_path / "atlas"), *QUICK, env=ENV)
    assert done.returncode == 2 and "unknown key(s) ['colour']" in done.stderr
    assert not (tmp_path / "atlas").exists()
