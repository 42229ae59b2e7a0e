"""render.pruning on cases whose answer is known: the search, the straight-through step, the gating, and a pruning
that must find the two channels a hand-built task reads."""

from __future__ import annotations

import torch
from torch import nn

from render.pruning import Nodes, PruneConfig, gated, mean_activations, prune, smallest_k, step


def test_smallest_k_finds_the_first_k_at_target_and_only_evaluates_a_few():
    losses = [1.0 - 0.01 * k for k in range(101)]  # reaches 0.5 at k = 50
    asked = []

    def loss_at(k: int) -> float:
        asked.append(k)
        return losses[k]

    assert smallest_k(loss_at, 0, 100, 0.5) == 50
    assert len(asked) <= 9  # log2(100) + the check of hi
    assert smallest_k(loss_at, 0, 100, 0.5 - 1e-9) == 51
    assert smallest_k(loss_at, 0, 100, -0.1) is None
    assert smallest_k(lambda k: 0.0, 0, 100, 0.1) == 0


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


def test_means_are_over_every_position_of_every_window():
    model = Probe()
    windows = torch.randn(10, 6, 8)
    means = mean_activations(model, {"p": model.point}, windows, batch=3)
    assert torch.allclose(means["p"], windows.mean(dim=(0, 1)), atol=1e-6)


def _task(seed: int) -> tuple[Probe, dict, dict, callable, callable]:
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

    def loss() -> torch.Tensor:
        return nn.functional.cross_entropy(model(x)[:, 0], labels)

    return model, points, means, (lambda _step: loss()), (lambda: float(loss()))


def test_pruning_keeps_exactly_the_channels_the_task_reads_and_is_deterministic():
    model, points, means, step_loss, search_loss = _task(0)
    nodes = Nodes({"p": 8})
    config = PruneConfig(steps=150, lr=0.05, k_coef=0.01, target_loss=0.03, seed=0)
    pruned = prune(nodes, points, means, step_loss, search_loss, config)
    assert pruned.met and pruned.k == 2
    assert sorted(pruned.order[:2].tolist()) == [2, 5]
    assert pruned.curve[1] > config.target_loss >= pruned.curve[2] == pruned.loss
    again = prune(nodes, points, means, step_loss, search_loss, config)
    assert torch.equal(again.tau, pruned.tau) and again.curve == pruned.curve


def test_a_target_no_k_meets_is_reported_with_the_best_k():
    model, points, means, step_loss, search_loss = _task(1)
    pruned = prune(Nodes({"p": 8}), points, means, step_loss, search_loss,
                   PruneConfig(steps=20, target_loss=0.0, seed=0))
    assert not pruned.met
    assert pruned.loss == min(pruned.curve.values()) and pruned.curve[pruned.k] == pruned.loss


def test_nodes_keep_the_first_k_of_an_order_point_by_point():
    nodes = Nodes({"a": 3, "b": 2, "c": 4})
    assert nodes.total == 9
    gates = nodes.top(torch.tensor([4, 0, 8, 1]), 3)
    assert gates["a"].tolist() == [1, 0, 0] and gates["b"].tolist() == [0, 1] and gates["c"].tolist() == [0, 0, 0, 1]
    kept = nodes.kept(torch.tensor([4, 0, 8, 1]), 4)
    assert {name: k.tolist() for name, k in kept.items()} == {"a": [0, 1], "b": [1], "c": [3]}
    assert nodes.split(torch.arange(9.0))["b"].tolist() == [3.0, 4.0]
