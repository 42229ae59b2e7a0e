"""Task circuits by pruning (Gao et al. 2025, appendix A.5; shared/anchors.md): learn which nodes a task needs, then
find the fewest that still do it, for several settings of the pruning at once.

A *node* is one channel of a named hook point (a residual read channel, a q/k/v channel, an MLP neuron, a residual
write channel). Every node has a mask logit tau in [-1, 1]; the forward pass keeps a node when tau > 0 and otherwise
replaces its activation by its mean over pretraining text (mean ablation), so a pruned node carries no information
about the prompt but leaves the stream at its usual scale. The step function has no gradient, so training uses the
sigmoid's derivative in its place (a straight-through estimator). The loss is the task loss plus ``k_coef`` times the
number of kept nodes.

As the paper and its public replication do it:

- tau starts small and untied, N(0.1, 0.01): every node is kept at first, but nodes are not tied at one value, so
  the order training leaves them in is the order their gradients gave them (a start at the clamp, +1, left most
  nodes at exactly 1 and the order among them arbitrary);
- AdamW (betas 0.9, 0.95, a small weight decay) with the learning rate decaying linearly to 0 and the gradient's
  norm clipped;
- the caller's minibatches are contrastive pairs: both prompts of a pair, one per answer, in the same step;
- after training, nodes are ordered by tau and the circuit is the top k for the smallest k whose task loss, read
  after a *calibration*, is at most the target. The calibration is a scale and a shift of the two candidates' logit
  difference fitted (L-BFGS) on the pruning prompts at that k: mean-ablating most of a model leaves its logits
  shrunk or biased towards one candidate, which the paper corrects before reading the loss. (A shift added to every
  logit would change no softmax, so the shift here is the first candidate's logit offset.)

*A sweep*. ``k_coef`` (and the learning rate) decide the circuit's size, and no one value suits every task and
model, so ``prune`` trains several settings at once: tau is [S, nodes], and the caller's forward pass repeats its
minibatch S times, block s of the batch gated by setting s's mask (``gated`` with [S, n] gates). One forward and one
backward train all S: each setting's loss depends only on its own row of tau, and AdamW, the clipping and the
schedule act on each row alone, so a setting's result is the one a run of it alone would give (up to the float
rounding of a larger batch). The k search is batched the same way: every setting's candidate k in one forward.

A setting that reaches no k at the target is reported as such, with the lowest loss it reached and that k
(``Pruned.met`` False): never as a circuit of the whole model.

Pure torch: the caller gives the hook modules, the means and the task (``Objective``). Seeded runs on CPU are
deterministic. Nodes that training drove to the clamp tie there; the order breaks such ties by how hard the gradient
still pushed each node at the end, then by node order (``node_order``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from render.hooks import activations

Report = Callable[[str], None]


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


def mean_activations(model: nn.Module, points: Mapping[str, nn.Module], windows: torch.Tensor, batch: int = 32,
                     report: Callable[[int, int], None] | None = None) -> dict[str, torch.Tensor]:
    """Each point's mean activation per channel over every position of ``windows`` [N, T] (pretraining text);
    ``report(done, total)`` after each batch of windows."""
    sums: dict[str, torch.Tensor] = {}
    positions = done = 0
    with torch.inference_mode():
        for chunk in windows.split(batch):
            for name, act in activations(model, points, chunk).items():  # [b, T, n]
                total = act.double().sum(dim=(0, 1))
                sums[name] = sums[name] + total if name in sums else total
            positions += chunk.shape[0] * chunk.shape[1]
            done += chunk.shape[0]
            if report is not None:
                report(done, len(windows))
    return {name: (total / positions).float() for name, total in sums.items()}


@contextmanager
def gated(points: Mapping[str, nn.Module], gates: Mapping[str, torch.Tensor],
          replacement: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """While inside, each point's output x [..., n] becomes replacement + gate * (x - replacement): a gate of 1 keeps
    the channel, 0 puts the replacement (its mean, or zero) in its place. Points without a gate are left alone.

    A gate [n] applies to every row of the batch. A gate [C, n] gates C *copies*: the batch must be C equal blocks
    along its first dimension (the caller's inputs repeated C times), and block c is gated by row c, so one forward
    pass runs C masks (the settings of a sweep, or the k's of a search)."""

    def hook_for(name: str):
        gate, value = gates[name], replacement[name]
        if gate.dim() == 1:
            return lambda _module, _inputs, out: value + gate * (out - value)

        def hook(_module, _inputs, out: torch.Tensor) -> torch.Tensor:
            blocks = out.unflatten(0, (gate.shape[0], -1))  # [C, b, ..., n]
            row = gate.view(gate.shape[0], *([1] * (out.dim() - 1)), gate.shape[1])
            return (value + row * (blocks - value)).flatten(0, 1)

        return hook

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
        """[..., total] -> {point: [..., channels]}."""
        return dict(zip(self.sizes, flat.split(list(self.sizes.values()), dim=-1), strict=True))

    def top(self, order: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        """Gates keeping the first k nodes of ``order`` (flat indices, best first): {point: [channels] 0/1}."""
        return self.split(self.top_flat(order, k))

    def top_flat(self, order: torch.Tensor, k: int) -> torch.Tensor:
        """[total] 0/1: the first k nodes of ``order``."""
        flat = torch.zeros(self.total)
        flat[order[:k]] = 1.0
        return flat

    def kept(self, order: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        """The channels of each point among the first k nodes of ``order``: {point: [kept] ascending indices}."""
        return {name: torch.nonzero(gate).flatten() for name, gate in self.top(order, k).items()}


@dataclass(frozen=True)
class Setting:
    """What a sweep varies: the penalty per kept node (task-loss nats per node) and the peak learning rate."""

    k_coef: float
    lr: float


@dataclass(frozen=True)
class PruneConfig:
    """How masks are trained and circuits read off them. The defaults follow the paper's appendix A.5 as its public
    replication has it (init, AdamW's betas and decay, clipping, linear decay, 16 L-BFGS steps of calibration) except
    the number of steps: 2,000 there, fewer here so that the embedded organisms' circuits are found in minutes on two
    CPU cores (the learning rate decays to 0 over whatever number is chosen)."""

    steps: int = 300
    k_coef: float | None = None  # one penalty for every setting instead of the sweep's (``atlascope precompute --k-coef``)
    init_mean: float = 0.1  # tau ~ N(init_mean, init_std): small and untied
    init_std: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-3
    eps: float = 1e-8
    clip: float = 1.0  # the largest L2 norm of one setting's gradient
    target_loss: float = 0.15  # the paper's
    calibration_steps: int = 16  # L-BFGS iterations of the scale and shift at each k read (0: no calibration)
    curve_points: int = 12  # k's spread geometrically over 0..nodes, read for every setting before the bisection
    seed: int = 0
    log_every: int = 10  # training steps between trace entries

    def record(self) -> dict:
        """How the masks were trained, for the stored circuit's config."""
        return {"steps": self.steps, "init": {"distribution": "normal", "mean": self.init_mean, "std": self.init_std},
                "optimizer": {"name": "AdamW", "betas": list(self.betas), "weight_decay": self.weight_decay,
                              "eps": self.eps, "schedule": "linear decay to 0"},
                "clip": self.clip, "target_loss": self.target_loss,
                "calibration": {"fit": "scale and shift of the candidates' logit difference on the pruning prompts",
                                "optimizer": "L-BFGS", "steps": self.calibration_steps},
                "seed": self.seed}


@dataclass(frozen=True)
class Objective:
    """The task as pruning sees it, in *margins*: a prompt's correct candidate's logit minus its wrong one's. The
    paper's task loss of a prompt, -log softmax(correct, wrong)[correct], is softplus(-margin).

    ``step(i, copies)``: the margins [copies, b] of training step i's minibatch with the model's input repeated
    ``copies`` times (block c gated by mask c: see ``gated``), differentiable; it must depend on i alone (not on how
    many settings train), so a setting trained in a sweep sees the batches it would see alone. ``search(copies)``: the
    margins [copies, N] of every pruning prompt, likewise repeated; no gradient needed. ``signs`` [N]: +1 where a
    prompt's correct candidate is the task's first, -1 where it is the second (the calibration's shift moves the first
    candidate's logit)."""

    step: Callable[[int, int], torch.Tensor]
    search: Callable[[int], torch.Tensor]
    signs: torch.Tensor


def task_losses(margins: torch.Tensor) -> torch.Tensor:
    """Per-prompt task loss of margins: softplus(-margin) = -log softmax(correct, wrong)[correct]."""
    return F.softplus(-margins.float())


@dataclass(frozen=True)
class Calibration:
    """The candidates' logit difference as read: scale * difference + shift (first candidate minus second)."""

    scale: float = 1.0
    shift: float = 0.0

    def apply(self, margins: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
        """Calibrated margins: a margin is signs * difference, so scale * margin + signs * shift."""
        return self.scale * margins.double() + self.shift * signs.double()


def calibrate(margins: torch.Tensor, signs: torch.Tensor, steps: int = 16) -> Calibration:
    """The scale and shift minimising the mean task loss of ``margins`` [N] (a logistic regression on one feature:
    convex, so L-BFGS settles in a few steps). One fit per call, so a fit never depends on what was fitted beside it.
    ``steps`` 0: no calibration (scale 1, shift 0)."""
    if steps <= 0:
        return Calibration()
    m, s = margins.detach().double(), signs.double()
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.softplus(-(params[0] * m + params[1] * s)).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    scale, shift = (float(v) for v in params.detach())
    if not (math.isfinite(scale) and math.isfinite(shift)):
        return Calibration()
    return Calibration(scale, shift)


@dataclass
class Pruned:
    """One setting's outcome: node order by learned tau, the circuit's size k, the (calibrated) loss of every k
    evaluated, the calibration of each, and the training trace."""

    setting: Setting
    tau: torch.Tensor  # [total] learned mask logits
    order: torch.Tensor  # [total] flat node indices, highest tau first (``node_order``)
    met: bool  # whether some k met the target
    k: int  # the smallest k evaluated at target; when none met it, ``best_k``
    loss: float  # calibrated task loss on the pruning prompts at k
    best_k: int  # the smallest k with the lowest loss evaluated
    best_loss: float
    curve: dict[int, float] = field(default_factory=dict)  # k -> calibrated task loss on the pruning prompts
    calibrations: dict[int, Calibration] = field(default_factory=dict)  # k -> its fitted scale and shift
    trace: list[dict] = field(default_factory=list)  # per logged step: task loss, kept nodes

    def settle(self, target: float) -> None:
        """Set met, k, loss and the best from the curve as it stands. The loss is not quite monotone in k: of every k
        evaluated (the curve's and the bisection's), the smallest at target."""
        self.best_k = min(self.curve, key=lambda at: (self.curve[at], at))
        self.best_loss = self.curve[self.best_k]
        meeting = [at for at, loss in self.curve.items() if loss <= target]
        self.met = bool(meeting)
        self.k = min(meeting) if meeting else self.best_k
        self.loss = self.curve[self.k]
        self.curve = dict(sorted(self.curve.items()))


class _RowAdamW:
    """AdamW on the rows of a [S, n] tensor, each row its own learning rate: the moments are elementwise, so row s
    moves exactly as a one-row AdamW with its learning rate would. The rate decays linearly from ``lrs`` to 0 over
    ``steps``; decoupled weight decay (param *= 1 - lr * decay), as torch's AdamW."""

    def __init__(self, like: torch.Tensor, lrs: torch.Tensor, steps: int, config: PruneConfig):
        self.lrs, self.steps, self.config = lrs, steps, config
        self.m, self.v = torch.zeros_like(like), torch.zeros_like(like)

    def step(self, param: torch.Tensor, grad: torch.Tensor, t: int) -> None:
        (b1, b2), c = self.config.betas, self.config
        lr = (self.lrs * (1 - t / self.steps))[:, None]  # [S, 1]
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denominator = (self.v.sqrt() / math.sqrt(1 - b2 ** (t + 1))).add_(c.eps)
        param.mul_(1 - lr * c.weight_decay)
        param.sub_(lr / (1 - b1 ** (t + 1)) * self.m / denominator)


def clip_rows(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Each row scaled down to L2 norm ``max_norm`` if above it (as torch's clip_grad_norm_, one row at a time, so
    one setting's gradient never scales another's)."""
    norms = grad.norm(dim=1, keepdim=True)
    return grad * (max_norm / (norms + 1e-6)).clamp(max=1.0)


def initial_tau(total: int, config: PruneConfig) -> torch.Tensor:
    """[total] N(init_mean, init_std) from the config's seed, clamped to [-1, 1]: every setting starts from it."""
    generator = torch.Generator().manual_seed(config.seed)
    return (config.init_mean + config.init_std * torch.randn(total, generator=generator)).clamp(-1.0, 1.0)


def train_taus(nodes: Nodes, points: Mapping[str, nn.Module], means: Mapping[str, torch.Tensor],
               objective: Objective, settings: Sequence[Setting], config: PruneConfig,
               report: Report | None = None) -> tuple[torch.Tensor, torch.Tensor, list[list[dict]]]:
    """Learn every setting's mask logits at once: tau [S, total], trained on the task loss of each step's minibatch
    (repeated once per setting) plus k_coef x kept nodes, with AdamW per row, per-row clipping and tau clamped to
    [-1, 1] after every step. Returns tau [S, total], AdamW's first moment of each tau's gradient at the end [S,
    total] (what breaks ties at the clamp: ``node_order``) and each setting's trace (every ``log_every`` steps and the
    last)."""
    count, device = len(settings), _device(means)
    tau = initial_tau(nodes.total, config).to(device).repeat(count, 1).requires_grad_(True)
    k_coefs = torch.tensor([s.k_coef for s in settings], device=device)
    optimizer = _RowAdamW(tau.detach(), torch.tensor([s.lr for s in settings], device=device), config.steps, config)
    traces: list[list[dict]] = [[] for _ in settings]
    for i in range(config.steps):
        gates = step(tau)  # [S, total]
        with gated(points, nodes.split(gates), means):
            margins = objective.step(i, count)  # [S, b]
        task = task_losses(margins).mean(dim=1)  # [S]
        kept = gates.sum(dim=1)
        (task.sum() + (k_coefs * kept).sum()).backward()
        with torch.no_grad():
            optimizer.step(tau, clip_rows(tau.grad, config.clip), i)
            tau.clamp_(-1.0, 1.0)
        tau.grad = None
        if i % config.log_every == 0 or i == config.steps - 1:
            for row, trace in enumerate(traces):
                trace.append({"step": i, "task_loss": round(float(task[row].detach()), 5), "kept": int(kept[row])})
            if report is not None:
                report(f"step {i + 1}/{config.steps}, loss {_span(task.tolist(), '.3f')}, "
                       f"kept {_span(kept.int().tolist(), ',')} nodes")
    return tau.detach().cpu(), optimizer.m.cpu(), traces


def node_order(tau: torch.Tensor, momentum: torch.Tensor) -> torch.Tensor:
    """[total] flat node indices, best first: highest tau first. Nodes that training pushed to the clamp (+1 or -1)
    tie there, so among equal taus the node whose gradient still pushed harder towards keeping it at the end (the
    lower first moment: the loss falls as tau rises) comes first, then node order."""
    by_momentum = torch.argsort(momentum, stable=True)
    return by_momentum[torch.argsort(-tau[by_momentum], stable=True)]


def _device(means: Mapping[str, torch.Tensor]) -> torch.device:
    return next(iter(means.values())).device


def _span(values: list, spec: str) -> str:
    low, high = min(values), max(values)
    return format(low, spec) if low == high else f"{low:{spec}}-{high:{spec}}"


def curve_points(total: int, count: int = 24) -> list[int]:
    """k values spread geometrically over 0..total, so the curve is sharp where circuits are small."""
    ks = {0, total, *torch.logspace(0, math.log10(max(total, 1)), count).round().int().tolist()}
    return sorted(k for k in ks if 0 <= k <= total)


class Search:
    """Reads the calibrated task loss of (setting, k) masks on the pruning prompts, many masks per forward pass
    (``max_copies`` at most), and records each in its setting's curve."""

    def __init__(self, nodes: Nodes, points: Mapping[str, nn.Module], means: Mapping[str, torch.Tensor],
                 objective: Objective, config: PruneConfig, max_copies: int = 8):
        self.nodes, self.points, self.means, self.objective = nodes, points, means, objective
        self.config, self.max_copies = config, max_copies

    def read(self, wanted: Sequence[tuple[Pruned, int]]) -> None:
        """Evaluate every (setting, k) not yet on its curve."""
        todo = list(dict.fromkeys((id(p), k) for p, k in wanted if k not in p.curve))
        by_id = {id(p): p for p, _ in wanted}
        gates = [self.nodes.top_flat(by_id[pid].order, k) for pid, k in todo]
        for (pid, k), (loss, calibration) in zip(todo, self.losses(gates), strict=True):
            by_id[pid].calibrations[k] = calibration
            by_id[pid].curve[k] = loss

    def losses(self, gates: Sequence[torch.Tensor]) -> list[tuple[float, Calibration]]:
        """The calibrated task loss of each mask (a [total] 0/1 gate) on the pruning prompts, with its calibration
        fitted on them as every k's is: ``max_copies`` masks per forward pass."""
        out = []
        for start in range(0, len(gates), self.max_copies):
            chunk = torch.stack(list(gates[start:start + self.max_copies]))  # [C, total]
            with torch.no_grad(), gated(self.points, self.nodes.split(chunk.to(_device(self.means))), self.means):
                margins = self.objective.search(len(chunk)).cpu()  # [C, N]
            for row in margins:
                calibration = calibrate(row, self.objective.signs, self.config.calibration_steps)
                out.append((float(task_losses(calibration.apply(row, self.objective.signs)).mean()), calibration))
        return out


def prune(nodes: Nodes, points: Mapping[str, nn.Module], means: Mapping[str, torch.Tensor], objective: Objective,
          settings: Sequence[Setting], config: PruneConfig, report: Report | None = None) -> list[Pruned]:
    """Train every setting's mask (``train_taus``), order each setting's nodes by tau (stable, so ties keep node
    order), read each at ``config.curve_points`` k's, then bisect, all settings in step, between the last k of its
    curve above the target and the first at it, for the smallest k whose calibrated loss meets the target (assuming
    more nodes do no worse, true of the learned order up to noise). Returns one ``Pruned`` per setting, in order."""
    taus, momenta, traces = train_taus(nodes, points, means, objective, settings, config,
                                       None if report is None else (lambda said: report(f"training, {said}")))
    results = [Pruned(setting, tau, node_order(tau, momentum), False, 0, math.inf, 0, math.inf, trace=trace)
               for setting, tau, momentum, trace in zip(settings, taus, momenta, traces, strict=True)]
    search = Search(nodes, points, means, objective, config)
    if report is not None:
        report(f"reading the loss at {config.curve_points} k's")
    search.read([(p, k) for p in results for k in curve_points(nodes.total, config.curve_points)])
    bisect(search, results, config.target_loss, report)
    return results


def bisect(search: Search, results: Sequence[Pruned], target: float, report: Report | None = None) -> None:
    """For each setting, the smallest k at target between its curve's last miss below its first hit, by bisection,
    one k per setting per forward pass; then ``settle`` each."""
    brackets = {}
    for p in results:
        hits = [k for k, loss in p.curve.items() if loss <= target]
        if not hits:
            continue
        first = min(hits)
        lo = max((k + 1 for k in p.curve if k < first), default=0)  # the k's between the last miss and the first hit
        if lo < first:
            brackets[id(p)] = (p, lo, first)
    while brackets:
        if report is not None:
            shown = list(brackets.values())
            report("bisecting k: " + ", ".join(f"{lo}..{hi}" for _, lo, hi in shown[:4])
                   + (f" (and {len(shown) - 4} more settings)" if len(shown) > 4 else ""))
        search.read([(p, (lo + hi) // 2) for p, lo, hi in brackets.values()])
        for pid, (p, lo, hi) in list(brackets.items()):
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if p.curve[mid] <= target else (mid + 1, hi)
            if lo < hi:
                brackets[pid] = (p, lo, hi)
            else:
                del brackets[pid]
    for p in results:
        p.settle(target)


def extend_curve(search: Search, pruned: Pruned, count: int = 24) -> None:
    """Read one setting at more k's (the chosen setting's curve for its page), keeping its k unless a new reading
    finds a smaller one at target."""
    search.read([(pruned, k) for k in curve_points(len(pruned.order), count)])
    pruned.settle(search.config.target_loss)
