"""The embedded organism: its committed weights match their card, it really learned its task on held-out data, and
the loader's failures say where the weights belong."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from precompute import loaders
from precompute.datasets.patterns import CLASSES, make_batch
from precompute.datasets.images import to_tensor
from precompute.organisms.train_tinyvision import evaluate
from precompute.registry import TINYVISION

CARD = TINYVISION.card()
WEIGHTS = TINYVISION.card_file.with_name(CARD["weights"]["file"])


def test_weights_match_their_card_and_are_small():
    assert hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == CARD["weights"]["sha256"]
    assert WEIGHTS.stat().st_size < 3 * 2**20
    assert CARD["training"]["command"] == "python -m precompute.organisms.train_tinyvision"


def test_heldout_accuracy_is_what_the_card_says():
    held_out = make_batch(100 * len(CLASSES), "test", seed=CARD["training"]["seed"])
    accuracy, per_class = evaluate(loaders.load_tinyvision(), to_tensor(held_out.images), torch.from_numpy(held_out.labels))
    assert accuracy == pytest.approx(CARD["metrics"]["heldout_accuracy"], abs=0.005)
    assert accuracy > 0.85 > 10 * CARD["metrics"]["chance"]


def test_splits_do_not_overlap_and_are_reproducible():
    train, test = make_batch(170, "train", seed=0), make_batch(170, "test", seed=0)
    assert np.array_equal(train.images, make_batch(170, "train", seed=0).images)
    train_bytes = {image.tobytes() for image in train.images}
    assert not any(image.tobytes() in train_bytes for image in test.images)
    assert sorted(np.bincount(train.labels)) == [10] * len(CLASSES)


def test_missing_or_altered_weights_say_where_they_belong(tmp_path):
    with pytest.raises(loaders.WeightsError, match="weights not found at .*train_tinyvision"):
        loaders.verified_state_dict(tmp_path / "absent.pt", None, "Recreate it with `python -m precompute.organisms.train_tinyvision`.")
    altered = tmp_path / "altered.pt"
    altered.write_bytes(WEIGHTS.read_bytes() + b"x")
    with pytest.raises(loaders.WeightsError, match="do not match sha256"):
        loaders.verified_state_dict(altered, CARD["weights"]["sha256"], "")
