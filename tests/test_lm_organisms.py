"""The embedded language organisms: their committed weights are as sparse as their cards say, their held-out loss
and task accuracy recompute to the card's numbers, and the training recipe's pieces do what the paper describes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from precompute.lm import compact, corpus, sparsity
from precompute.lm.evaluate import heldout_loss, task_metrics
from precompute.lm.model import GPTConfig, SparseGPT
from precompute.lm.tasks import TASKS, split
from precompute.lm.tokenizer import load_tokenizer
from precompute.loaders import WeightsError
from precompute.organisms import tinylm
from precompute.registry import get_model
from store.keys import CardKey

SLUGS = ["tinylm-sparse", "tinylm-dense"]


@pytest.fixture(scope="module", params=SLUGS)
def organism(request) -> tuple[str, dict, SparseGPT]:
    spec = get_model(request.param)
    return request.param, spec.card(), spec.load()  # checked against the card's sha256, as the job loads it


def test_sparse_weights_hold_the_target():
    """Count the nonzeros of every matrix of the committed sparse model against the target (at most 1/16 of each),
    with every neuron keeping a few, and the card's counts are the real ones."""
    card = json.loads(tinylm.card_path("tinylm-sparse").read_text())
    target = card[CardKey.SPARSITY]["target"]
    assert target <= 1 / 16
    model = tinylm.load("tinylm-sparse")
    matrices = model.sparse_matrices()
    assert set(matrices) == set(card[CardKey.SPARSITY]["matrices"])
    for name, matrix in matrices.items():
        cols = matrix.shape[1]
        nonzero = int(matrix.count_nonzero())
        assert nonzero <= int(target * matrix.numel()), f"{name}: {nonzero} nonzero of {matrix.numel()}"
        assert (matrix != 0).sum(1).min() >= min(sparsity.MIN_PER_ROW, cols), f"{name}: a row lost all its weights"
        assert card[CardKey.SPARSITY]["matrices"][name]["nonzero"] == nonzero


def test_dense_twin_is_dense_and_matched():
    sparse, dense = (json.loads(tinylm.card_path(slug).read_text()) for slug in SLUGS)
    assert dense[CardKey.SPARSITY]["nonzero_fraction"] > 0.99
    assert dense[CardKey.ARCHITECTURE] == sparse[CardKey.ARCHITECTURE]
    # the dense twin trains until it reaches the sparse model's held-out loss
    assert abs(dense[CardKey.HELDOUT]["loss"] - sparse[CardKey.HELDOUT]["loss"]) < 0.1


def test_heldout_loss_recomputes_to_the_card(organism):
    slug, card, model = organism
    tokens = corpus.load_heldout().tokens
    loss = heldout_loss(model, tokens, model.config.block_size, 64)
    assert loss == pytest.approx(card[CardKey.HELDOUT]["loss"], abs=1e-3)
    # the sample's own unigram entropy (a bound no model of token frequencies alone can beat) is 6.29 nats; the
    # organisms, which read seven parts generated code to one of the corpus, are about 1.7 nats under it
    counts = np.bincount(tokens, minlength=model.config.vocab_size)
    frequencies = counts[counts > 0] / counts.sum()
    unigram = float(-(frequencies * np.log(frequencies)).sum())
    assert loss < unigram - 1.5, f"{slug} learned little: {loss:.2f} nats per token against {unigram:.2f} for unigrams"


def test_task_metrics_recompute_to_the_card(organism):
    """On all 400 held-out evaluation pairs of every registered task, recomputed here: the card's losses and
    accuracies. (The floor the circuits want, loss <= 0.15 and 95%, is not met yet; the README gives the numbers.)"""
    slug, card, model = organism
    tokenizer = load_tokenizer()
    assert set(card[CardKey.TASKS]) == set(TASKS)
    for name, task in TASKS.items():
        metrics = task_metrics(model, tokenizer, task, split(task, "eval", tinylm.TASK_PAIRS))
        assert metrics["loss"] == pytest.approx(card[CardKey.TASKS][name]["loss"], abs=1e-3), name
        assert metrics["accuracy"] == pytest.approx(card[CardKey.TASKS][name]["accuracy"], abs=1e-3), name


def test_altered_weights_are_refused_with_the_remedy(tmp_path):
    """A card whose sha256 the committed file does not match: the loader refuses it (the CLI's exit 2) and says how
    to remake the weights, rather than loading them."""
    spec = get_model("tinylm-dense")
    card = spec.card()
    card[CardKey.WEIGHTS]["sha256"] = "0" * 64
    (tmp_path / "tinylm-dense.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="do not match sha256 0{64}.*train_tinylm dense"):
        dataclasses.replace(spec, card_file=tmp_path / "tinylm-dense.json").load()


def test_keep_largest_keeps_the_largest_and_a_few_per_row():
    torch.manual_seed(0)
    matrix = torch.randn(64, 256)
    original = matrix.clone()
    sparsity.keep_largest_(matrix, 1 / 32)
    kept = matrix != 0
    assert torch.equal(matrix[kept], original[kept])
    assert kept.sum(1).min() >= sparsity.MIN_PER_ROW
    budget = int(64 * 256 / 32)
    assert kept.sum() == budget  # never more than the fraction, though every row keeps its few
    # what is dropped is smaller than anything kept beyond the rows' minimum
    row_minimum = torch.zeros_like(kept).scatter_(1, original.abs().topk(sparsity.MIN_PER_ROW, dim=1).indices, True)
    assert original.abs()[~kept].max() <= original.abs()[kept & ~row_minimum].min()


def test_kept_fraction_anneals_linearly_between_1_and_50_percent():
    steps, target = 1000, 1 / 16
    assert sparsity.kept_fraction(0, steps, target) == 1.0
    assert sparsity.kept_fraction(10, steps, target) == 1.0
    assert sparsity.kept_fraction(255, steps, target) == pytest.approx(1 + (target - 1) * 245 / 490)
    assert sparsity.kept_fraction(500, steps, target) == target
    assert sparsity.kept_fraction(999, steps, target) == target
    assert sparsity.lr_scale(target, target) == 1.0
    assert sparsity.lr_scale(1.0, target) == pytest.approx(0.25)


def test_rescale_gradients_to_rms_one():
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))]
    params[0].grad, params[1].grad = torch.tensor([3.0, 0, 0]), torch.full((2, 2), 4.0)
    sparsity.rescale_gradients_(params)
    squares = sum(float(p.grad.pow(2).sum()) for p in params)
    assert squares / 7 == pytest.approx(1.0)


def test_compact_round_trip(tmp_path):
    model = SparseGPT(GPTConfig(d_model=32, d_mlp=64, n_head=2, n_layer=1, bigram_table_rank=8))
    sparsity.sparsify_(model.sparse_matrices(), 1 / 8)
    compact.save(tmp_path / "m.pt", model.config.to_dict(), model.state_dict())
    config, state = compact.load(tmp_path / "m.pt")
    assert config == model.config.to_dict()
    for name, tensor in model.state_dict().items():
        assert torch.allclose(state[name], tensor.half().float()), name
        assert torch.equal(state[name] != 0, tensor.half() != 0), name


def test_hook_points_see_the_activations_the_model_uses():
    """Zeroing an MLP's neurons through its hook changes the logits exactly as removing the MLP's output would."""
    torch.manual_seed(0)
    model = SparseGPT(GPTConfig(d_model=32, d_mlp=64, n_head=2, n_layer=2, afrac=None)).eval()
    idx = torch.randint(0, 2048, (2, 12))
    points = model.hook_points()
    assert {"0.attn.q", "1.mlp.post_act", "0.resid_mid", "1.resid_post", "0.attn.z"} <= set(points)
    seen = {}
    handle = points["0.attn.q"].register_forward_hook(lambda m, i, out: seen.setdefault("q", out))
    model(idx)
    handle.remove()
    assert seen["q"].shape == (2, 12, 32)
    handle = points["1.mlp.post_act"].register_forward_hook(lambda m, i, out: torch.zeros_like(out))
    ablated = model(idx)
    handle.remove()
    handle = points["1.mlp.out"].register_forward_hook(lambda m, i, out: torch.zeros_like(out))
    without_mlp = model(idx)
    handle.remove()
    assert torch.allclose(ablated, without_mlp, atol=1e-6)


def test_abstopk_keeps_a_quarter_of_each_location():
    model = SparseGPT(GPTConfig(d_model=32, d_mlp=64, n_head=2, n_layer=1)).eval()
    captured = {}
    handles = [model.hook_points()[name].register_forward_hook(
        lambda m, i, out, name=name: captured.setdefault(name, out)) for name in ("0.attn.q", "0.mlp.post_act")]
    model(torch.randint(0, 2048, (1, 5)))
    for handle in handles:
        handle.remove()
    assert ((captured["0.attn.q"] != 0).sum(-1) <= 8).all()
    assert ((captured["0.mlp.post_act"] != 0).sum(-1) <= 16).all()
