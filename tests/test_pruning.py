"""render.pruning on cases whose answer is known: the straight-through step, the gating (one mask or one per copy of
the batch), the per-setting AdamW and clipping, the calibration, a pruning that must find the two channels a
hand-built task reads (with untied taus), a target no k meets (reported as not met, never as the whole model), and a
sweep trained as one batch equal to its settings trained one at a time on a small transformer."""

from __future__ import annotations

import math

import torch
from torch import nn

from precompute.lm.circuits import node_points
from precompute.lm.model import GPTConfig, SparseGPT
from render.pruning import (Calibration, Nodes, Objective, PruneConfig, Setting, _RowAdamW, calibrate, clip_rows,
                            curve_points, gated, mean_activations, node_order, prune, step,
                            task_losses)


def test_the_step_is_heaviside_forward_and_the_sigmoid_derivative_backward():
    tau = torch.tensor([-0.5, 0.0, 0.25, 1.0], requires_grad=True)
    gates = step(tau)
    assert gates.tolist() == [0.0, 0.0, 1.0, 1.0]
    gates.sum().backward()
    s = torch.sigmoid(tau.detach())
    assert torch.allclose(tau.grad, s * (1 - s))


class Probe(nn.Module):
    """Eight input channels through a hook point, then a fixed readout that uses channels 2 and 5 only."""

    def __init__(self):
        super().__init__()
        self.point = nn.Identity()
        self.readout = nn.Linear(8, 2, bias=False)
        with torch.no_grad():
            self.readout.weight.zero_()
            self.readout.weight[0, 2], self.readout.weight[1, 5] = 3.0, 3.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, 8] -> [B, T, 2]
        return self.readout(self.point(x))


def test_a_gate_of_zero_puts_the_replacement_in_place_and_one_keeps_the_channel():
    model = Probe()
    x = torch.randn(3, 4, 8)
    mean = torch.arange(8.0)
    gate = torch.tensor([1.0, 0, 1, 0, 1, 0, 1, 0])
    seen = {}
    model.readout.register_forward_pre_hook(lambda _m, inputs: seen.setdefault("out", inputs[0]))  # what it reads
    with gated({"p": model.point}, {"p": gate}, {"p": mean}):
        model(x)
    expected = torch.where(gate.bool(), x, mean)
    assert torch.allclose(seen["out"], expected, atol=1e-6)
    seen.clear()
    model(x)  # the hook is gone after the block
    assert torch.equal(seen["out"], x)


def test_gates_with_a_row_per_copy_gate_each_copy_of_the_batch_by_its_own_row():
    model = Probe()
    x = torch.randn(3, 4, 8)
    mean = torch.arange(8.0)
    gates = (torch.rand(5, 8) > 0.5).float()
    with gated({"p": model.point}, {"p": gates}, {"p": mean}):
        batched = model(x.repeat(5, 1, 1))  # [5 * 3, 4, 2]
    for c in range(5):
        with gated({"p": model.point}, {"p": gates[c]}, {"p": mean}):
            assert torch.allclose(batched[3 * c:3 * (c + 1)], model(x), atol=1e-6)


def test_means_are_over_every_position_of_every_window():
    model = Probe()
    windows = torch.randn(10, 6, 8)
    said = []
    means = mean_activations(model, {"p": model.point}, windows, batch=3, report=lambda done, total: said.append(done))
    assert torch.allclose(means["p"], windows.mean(dim=(0, 1)), atol=1e-6)
    assert said == [3, 6, 9, 10]


def test_each_row_moves_as_torch_adamw_with_its_own_linearly_decaying_rate_would():
    config = PruneConfig(steps=6, weight_decay=0.01)
    lrs = torch.tensor([0.1, 0.02])
    start = torch.randn(2, 5)
    grads = [torch.randn(2, 5) for _ in range(config.steps)]
    rows = start.clone()
    ours = _RowAdamW(rows, lrs, config.steps, config)
    for t, grad in enumerate(grads):
        ours.step(rows, grad, t)
    for r in range(2):
        param = nn.Parameter(start[r].clone())
        adamw = torch.optim.AdamW([param], lr=float(lrs[r]), betas=config.betas, eps=config.eps,
                                  weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(adamw, lambda t: 1 - t / config.steps)
        for grad in grads:
            param.grad = grad[r].clone()
            adamw.step()
            schedule.step()
        assert torch.allclose(rows[r], param.detach(), atol=1e-6)


def test_clipping_scales_each_row_alone():
    grad = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    clipped = clip_rows(grad, 1.0)
    assert torch.allclose(clipped[0], torch.tensor([0.6, 0.8]), atol=1e-5)
    assert torch.equal(clipped[1], grad[1])


def test_calibration_fits_the_log_odds_of_a_shrunk_and_shifted_logit_difference():
    generator = torch.Generator().manual_seed(0)
    signs = torch.where(torch.rand(4000, generator=generator) < 0.5, 1.0, -1.0)
    difference = signs + torch.randn(4000, generator=generator)  # first minus second: log-odds of the first 2 x this
    shrunk = 0.2 * difference - 0.5  # what a half-ablated model might give
    fitted = calibrate(signs * shrunk, signs)
    assert math.isclose(fitted.scale, 10.0, rel_tol=0.15) and math.isclose(fitted.shift / fitted.scale, 0.5, abs_tol=0.05)
    raw = task_losses(signs * shrunk).mean()
    assert task_losses(fitted.apply(signs * shrunk, signs)).mean() < raw - 0.2
    assert Calibration().apply(signs, signs).tolist() == signs.double().tolist()


def _probe_task(seed: int) -> tuple[dict, dict, Objective]:
    """Inputs whose class shows only in channel 2 (class 0) or 5 (class 1); the other channels are noise. Either
    channel alone decides most inputs (the other at its mean); both are needed for a loss under 0.03."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (64,), generator=generator)
    x = 0.3 * torch.randn(64, 1, 8, generator=generator)
    x[labels == 0, 0, 2] += 2.0
    x[labels == 1, 0, 5] += 2.0
    model = Probe()
    points = {"p": model.point}
    means = mean_activations(model, points, x)
    signs = torch.where(labels == 0, 1.0, -1.0)

    def margins(copies: int) -> torch.Tensor:
        logits = model(x.repeat(copies, 1, 1))[:, 0]  # [copies * 64, 2]
        return (signs.repeat(copies) * (logits[:, 0] - logits[:, 1])).view(copies, -1)

    return points, means, Objective(lambda _step, copies: margins(copies), margins, signs)


def test_pruning_keeps_exactly_the_channels_the_task_reads_and_is_deterministic():
    points, means, objective = _probe_task(0)
    nodes = Nodes({"p": 8})
    config = PruneConfig(steps=150, target_loss=0.03, calibration_steps=0, seed=0)
    (pruned,) = prune(nodes, points, means, objective, [Setting(k_coef=0.01, lr=0.05)], config)
    assert pruned.met and pruned.k == 2
    assert sorted(pruned.order[:2].tolist()) == [2, 5]
    assert pruned.curve[1] > config.target_loss >= pruned.curve[2] == pruned.loss
    assert set(pruned.curve) >= set(curve_points(8, config.curve_points))
    assert pruned.trace[0]["kept"] == 8 and pruned.trace[-1]["kept"] == 2  # started all kept (tau ~ 0.1), ended 2
    (again,) = prune(nodes, points, means, objective, [Setting(k_coef=0.01, lr=0.05)], config)
    assert torch.equal(again.tau, pruned.tau) and again.curve == pruned.curve
    # Calibrated (the default), one channel is enough: either alone separates the classes, the shift and scale
    # place the boundary, so the smallest circuit at target keeps one
    (calibrated,) = prune(nodes, points, means, objective, [Setting(k_coef=0.01, lr=0.05)],
                          PruneConfig(steps=150, target_loss=0.03, seed=0))
    assert calibrated.met and calibrated.k == 1 and calibrated.order[0] in (2, 5)
    assert calibrated.calibrations[1].scale > 1 and calibrated.curve[1] < pruned.curve[1]


def test_ties_at_the_clamp_are_broken_by_the_last_push_then_node_order():
    tau = torch.tensor([1.0, 0.3, 1.0, -1.0, -1.0, 1.0])
    momentum = torch.tensor([-0.1, 0.0, -0.5, 0.2, 0.1, -0.1])
    assert node_order(tau, momentum).tolist() == [2, 0, 5, 1, 4, 3]


def test_taus_start_small_and_untied():
    points, means, objective = _probe_task(0)
    (pruned,) = prune(Nodes({"p": 8}), points, means, objective, [Setting(0.0, 0.0)], PruneConfig(steps=1))
    assert len(set(pruned.tau.tolist())) == 8 and all(0.05 < t < 0.15 for t in pruned.tau.tolist())


def test_a_target_no_k_meets_is_not_met_and_says_its_best():
    points, means, objective = _probe_task(1)
    (pruned,) = prune(Nodes({"p": 8}), points, means, objective, [Setting(0.01, 0.05)],
                      PruneConfig(steps=20, target_loss=0.0, seed=0))
    assert not pruned.met
    assert pruned.best_loss == min(pruned.curve.values()) == pruned.loss and pruned.k == pruned.best_k
    assert pruned.curve[pruned.best_k] == pruned.best_loss


def test_nodes_keep_the_first_k_of_an_order_point_by_point():
    nodes = Nodes({"a": 3, "b": 2, "c": 4})
    assert nodes.total == 9
    gates = nodes.top(torch.tensor([4, 0, 8, 1]), 3)
    assert gates["a"].tolist() == [1, 0, 0] and gates["b"].tolist() == [0, 1] and gates["c"].tolist() == [0, 0, 0, 1]
    kept = nodes.kept(torch.tensor([4, 0, 8, 1]), 4)
    assert {name: k.tolist() for name, k in kept.items()} == {"a": [0, 1], "b": [1], "c": [3]}
    assert nodes.split(torch.arange(9.0))["b"].tolist() == [3.0, 4.0]
    assert nodes.split(torch.zeros(5, 9))["c"].shape == (5, 4)


def _small_transformer() -> tuple[SparseGPT, dict, dict, Nodes, Objective]:
    """A random 2-block SparseGPT (activation-sparse), its node points and means over random windows, and a task of
    random prompts each with a correct and a wrong next token, drawn per step from the step's index."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SparseGPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, d_model=16, n_head=2, d_head=4,
                                    d_mlp=32)).eval().requires_grad_(False)
    points = node_points(model)
    generator = torch.Generator().manual_seed(1)
    means = mean_activations(model, points, torch.randint(0, 64, (8, 16), generator=generator))
    nodes = Nodes({name: mean.numel() for name, mean in means.items()})
    prompts = torch.randint(0, 64, (32, 10), generator=generator)
    correct, wrong = torch.randint(0, 32, (32,), generator=generator), torch.randint(32, 64, (32,), generator=generator)

    def margins(rows: torch.Tensor, copies: int) -> torch.Tensor:
        logits = model(prompts[rows].repeat(copies, 1))[:, -1]  # [copies * b, vocab]
        picked = torch.arange(len(logits))
        return (logits[picked, correct[rows].repeat(copies)] - logits[picked, wrong[rows].repeat(copies)]).view(
            copies, -1)

    def at_step(i: int, copies: int) -> torch.Tensor:
        return margins(torch.randperm(32, generator=torch.Generator().manual_seed(i))[:8], copies)

    return model, points, means, nodes, Objective(at_step, lambda copies: margins(torch.arange(32), copies),
                                                  torch.ones(32))


def test_a_sweep_trained_as_one_batch_equals_its_settings_trained_alone():
    _, points, means, nodes, objective = _small_transformer()
    settings = [Setting(1e-3, 0.05), Setting(1e-2, 0.05), Setting(1e-3, 0.2)]
    config = PruneConfig(steps=12, target_loss=0.5, curve_points=6, seed=3)
    swept = prune(nodes, points, means, objective, settings, config)
    for setting, together in zip(settings, swept, strict=True):
        (alone,) = prune(nodes, points, means, objective, [setting], config)
        assert together.setting == setting
        assert torch.allclose(together.tau, alone.tau, atol=1e-5)
        assert together.curve.keys() == alone.curve.keys()
        assert all(math.isclose(together.curve[k], alone.curve[k], abs_tol=1e-4) for k in alone.curve)
        assert (together.met, together.k, together.best_k) == (alone.met, alone.k, alone.best_k)
        assert [step["kept"] for step in together.trace] == [step["kept"] for step in alone.trace]
    # the settings learned different masks: the sweep is not one run copied
    assert not torch.allclose(swept[0].tau, swept[2].tau)


def test_taus_are_untied_after_pruning():
    """Started at N(0.1, 0.01), not at the clamp, the nodes leave training with taus of their own, so their order
    is the training's, not node order (a start at +1 left the nodes training did not move tied there)."""
    _, points, means, nodes, objective = _small_transformer()
    (pruned,) = prune(nodes, points, means, objective, [Setting(1e-3, 0.05)], PruneConfig(steps=12, curve_points=4))
    tau = pruned.tau.tolist()
    assert len(set(tau)) > 0.9 * len(tau)
    assert pruned.order.tolist() != sorted(pruned.order.tolist())
