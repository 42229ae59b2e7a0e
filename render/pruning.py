"""Task circuits by pruning (Gao et al. 2025, shared/anchors.md): learn which nodes a task needs, then find the
fewest that still do it.

A *node* is one channel of a named hook point (a residual read channel, a q/k/v channel, an MLP neuron, a residual
write channel). Every node has a mask logit tau in [-1, 1]; the forward pass keeps a node when tau > 0 and otherwise
replaces its activation by its mean over pretraining text (mean ablation), so a pruned node carries no information
about the prompt but leaves the stream at its usual scale. The step function has no gradient, so training uses the
sigmoid's derivative in its place (a straight-through estimator). The loss is the task loss plus ``k_coef`` times the
number of kept nodes.

Training only ranks the nodes. The circuit is then the top k by tau for the smallest k whose task loss is at most the
target, found by bisection; every k evaluated is recorded, so the loss-vs-k curve is a by-product.

Pure torch: the caller gives the hook modules, the means and two functions that run the task: one on a minibatch of
pruning pairs for a training step, one on all of them for the search. Seeded runs on CPU are deterministic (ties in
tau are broken by node order).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from render.hooks import activations


class _StraightThroughStep(torch.autograd.Function):
    """Heaviside(tau) forward; the derivative of sigmoid(tau) backward."""

    @staticmethod
    def forward(ctx, tau: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(tau)
        return (tau > 0).to(tau.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (tau,) = ctx.saved_tensors
        s = torch.sigmoid(tau)
        return grad * s * (1 - s)


def step(tau: torch.Tensor) -> torch.Tensor:
    return _StraightThroughStep.apply(tau)


def mean_activations(model: nn.Module, points: Mapping[str, nn.Module], windows: torch.Tensor,
                     batch: int = 32) -> dict[str, torch.Tensor]:
    """Each point's mean activation per channel over every position of ``windows`` [N, T] (pretraining text)."""
    sums: dict[str, torch.Tensor] = {}
    positions = 0
    with torch.inference_mode():
        for chunk in windows.split(batch):
            for name, act in activations(model, points, chunk).items():  # [b, T, n]
                total = act.double().sum(dim=(0, 1))
                sums[name] = sums[name] + total if name in sums else total
            positions += act.shape[0] * act.shape[1]
    return {name: (total / positions).float() for name, total in sums.items()}


@contextmanager
def gated(points: Mapping[str, nn.Module], gates: Mapping[str, torch.Tensor],
          replacement: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """While inside, each point's output x [..., n] becomes replacement + gate * (x - replacement): a gate of 1 keeps
    the channel, 0 puts the replacement (its mean, or zero) in its place. Points without a gate are left alone."""

    def hook_for(name: str):
        gate, value = gates[name], replacement[name]
        return lambda _module, _inputs, out: value + gate * (out - value)

    handles = [points[name].register_forward_hook(hook_for(name)) for name in gates]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class Nodes:
    """Every node of the points being pruned, in one flat order: point by point, channel by channel."""

    sizes: dict[str, int]  # point name -> channels, in forward order

    @property
    def total(self) -> int:
        return sum(self.sizes.values())

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """[total] -> {point: [channels]}."""
        return dict(zip(self.sizes, flat.split(list(self.sizes.values())), strict=True))

    def top(self, order: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        """Gates keeping the first k nodes of ``order`` (flat indices, best first): {point: [channels] 0/1}."""
        flat = torch.zeros(self.total)
        flat[order[:k]] = 1.0
        return self.split(flat)

    def kept(self, order: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        """The channels of each point among the first k nodes of ``order``: {point: [kept] ascending indices}."""
        return {name: torch.nonzero(gate).flatten() for name, gate in self.top(order, k).items()}


@dataclass(frozen=True)
class PruneConfig:
    steps: int = 400
    lr: float = 0.05
    k_coef: float = 3e-4  # task-loss nats per kept node
    init: float = 1.0  # every node starts kept
    target_loss: float = 0.15  # the paper's
    seed: int = 0


@dataclass
class Pruned:
    """The outcome: node order by learned tau, the circuit's size k, the loss of every k evaluated, and the training
    trace."""

    tau: torch.Tensor  # [total] learned mask logits
    order: torch.Tensor  # [total] flat node indices, highest tau first
    k: int  # the smallest k at target; when no k met it, the smallest with the lowest loss seen
    loss: float  # task loss on the pruning pairs at k
    met: bool  # whether k meets the target
    curve: dict[int, float] = field(default_factory=dict)  # k -> task loss on the pruning pairs
    trace: list[dict[str, float]] = field(default_factory=list)  # per logged step: task loss, kept nodes


def train_tau(nodes: Nodes, points: Mapping[str, nn.Module], means: Mapping[str, torch.Tensor],
              step_loss: Callable[[int], torch.Tensor], config: PruneConfig) -> tuple[torch.Tensor, list[dict]]:
    """Learn the mask logits with the straight-through step: Adam on task loss (``step_loss(i)``: a minibatch's, at
    step i) + k_coef x kept nodes, tau clamped to [-1, 1] after every step. Returns tau [total] and a trace every
    tenth step."""
    torch.manual_seed(config.seed)
    tau = torch.full((nodes.total,), config.init, requires_grad=True)
    optimizer = torch.optim.Adam([tau], lr=config.lr)
    trace = []
    for i in range(config.steps):
        gates = step(tau)
        with gated(points, nodes.split(gates), means):
            loss = step_loss(i)
        kept = gates.sum()
        optimizer.zero_grad()
        (loss + config.k_coef * kept).backward()
        optimizer.step()
        with torch.no_grad():
            tau.clamp_(-1.0, 1.0)
        if i % 10 == 0 or i == config.steps - 1:
            trace.append({"step": i, "task_loss": float(loss.detach()), "kept": int(kept.detach())})
    return tau.detach(), trace


def smallest_k(loss_at: Callable[[int], float], lo: int, hi: int, target: float) -> int | None:
    """The smallest k in [lo, hi] with loss_at(k) <= target, by bisection: assumes that once the top k nodes reach
    the target, more nodes do too (true of the learned order up to noise). None when even hi misses it."""
    if loss_at(hi) > target:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if loss_at(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return hi


def curve_points(total: int, count: int = 24) -> list[int]:
    """k values spread geometrically over 0..total, so the curve is sharp where circuits are small."""
    ks = {0, total, *torch.logspace(0, torch.log10(torch.tensor(float(total))), count).round().int().tolist()}
    return sorted(k for k in ks if 0 <= k <= total)


def prune(nodes: Nodes, points: Mapping[str, nn.Module], means: Mapping[str, torch.Tensor],
          step_loss: Callable[[int], torch.Tensor], search_loss: Callable[[], float], config: PruneConfig) -> Pruned:
    """Train the mask, order nodes by tau (stable, so ties keep node order), then bisect for the smallest k whose
    ``search_loss()`` (all pruning pairs) meets the target. When none does, k is the smallest with the lowest loss."""
    tau, trace = train_tau(nodes, points, means, step_loss, config)
    order = torch.argsort(-tau, stable=True)
    curve: dict[int, float] = {}

    def loss_at(k: int) -> float:
        if k not in curve:
            with torch.no_grad(), gated(points, nodes.top(order, k), means):
                curve[k] = float(search_loss())
        return curve[k]

    for k in curve_points(nodes.total):
        loss_at(k)
    kept = int((tau > 0).sum())
    met = (smallest_k(loss_at, 0, max(kept, 1), config.target_loss) is not None
           or smallest_k(loss_at, 0, nodes.total, config.target_loss) is not None)
    # The loss is not quite monotone in k: of every k evaluated (the search's and the curve's), the smallest at target
    k = (min(at for at, loss in curve.items() if loss <= config.target_loss) if met
         else min(curve, key=lambda at: (curve[at], at)))
    return Pruned(tau, order, k, curve[k], met, dict(sorted(curve.items())), trace)
