"""What a vision unit reads from an earlier layer: its kernels, direct or expanded, ranked and drawn.

Between directly connected conv layers the weights are the conv kernel with the following batchnorm folded in. Where
pooling, concatenated branches or residual adds lie between two layers the Circuits thread's expanded weights stand in
for them: the gradient of the later unit at one cell with respect to the earlier layer's activations, with the network
linearised (render/linearize.py), so it depends on the weights alone. Both are kernels [dst, src, kh, kw]; a pair's
strength is its kernel's L2 norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from render.featvis import frozen
from render.hooks import activations
from render.linearize import linearized
from render.receptive_field import spans

# kernel_image's colours at full strength (white at 0): orange-red for positive weights, blue for negative.
POSITIVE = (0.85, 0.25, 0.05)
NEGATIVE = (0.10, 0.35, 0.80)


@dataclass(frozen=True)
class Kernels:
    weights: torch.Tensor  # [dst_units, src_units, kh, kw]
    centre: tuple[int, int]  # (y, x) of the dst cell the kernels are read at
    offset: tuple[int, int]  # (y, x) in the src grid of weights[..., 0, 0], the kernel window's top left


def folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> torch.Tensor:
    """The conv's kernel [out, in, kh, kw] scaled by the eval-mode batchnorm that follows it, if any."""
    weight = conv.weight.detach()
    if bn is None:
        return weight.clone()
    if bn.running_var is None:
        raise ValueError("a batchnorm without running statistics cannot be folded into the conv")
    scale = (bn.running_var + bn.eps).rsqrt()  # [out]
    if bn.weight is not None:
        scale = scale * bn.weight.detach()
    return weight * scale.view(-1, 1, 1, 1)


def _rows(model: nn.Module, src: nn.Module, dst: nn.Module, input_shape: tuple[int, int, int],
          units: torch.Tensor, centre: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """Gradient of dst unit ``units[b]`` at ``centre`` w.r.t. src's activations, for each slot b: [n, C_src, h, w].

    src's output is swapped for a leaf per slot, so one backward of the slots' sum gives every slot its own row (slots
    never interact in eval mode).
    """
    leaves: list[torch.Tensor] = []

    def replace(_module, _inputs, output):
        leaves.append(output.detach().clone().requires_grad_())
        return leaves[-1].clone()  # not the leaf itself, which in-place ops after src (out += identity) must not touch

    handle = src.register_forward_hook(replace)
    try:
        x = torch.zeros(len(units), *input_shape, dtype=dtype, device=units.device)
        out = activations(model, {"dst": dst}, x)["dst"]  # [n, C_dst, h_dst, w_dst]
    finally:
        handle.remove()
    if len(leaves) != 1:
        raise ValueError(f"src must run exactly once before dst, it ran {len(leaves)} times")
    picked = out[torch.arange(len(units)), units, centre[0], centre[1]]  # [n]
    if not picked.requires_grad:
        raise ValueError("dst does not depend on src")
    (grad,) = torch.autograd.grad(picked.sum(), leaves[0])
    return grad


def expanded_weights(model: nn.Module, src: nn.Module, dst: nn.Module, input_shape: tuple[int, int, int],
                     device: torch.device | str = "cpu", chunk: int = 64) -> Kernels:
    """Expanded weights from every unit of ``src`` to every unit of ``dst``, read at dst's centre cell.

    Cropped to the union over all units of the gradient's nonzero support (the kernel window; near a small grid's
    border it is clipped by the grid). ``model`` takes [B, 3, H, W] images and must already be on ``device``; it is run
    in eval mode with batches of ``chunk`` dst units, each costing a forward to dst of ``chunk`` images and a backward
    to src. The result is in the model's dtype, on ``device``.
    """
    if src is dst:
        raise ValueError("src and dst are the same module")
    device = torch.device(device)
    dtype = next(model.parameters()).dtype
    with frozen(model), linearized(), torch.enable_grad():
        with torch.no_grad():
            probe = activations(model, {"dst": dst}, torch.zeros(1, *input_shape, dtype=dtype, device=device))["dst"]
        n_dst, h, w = probe.shape[1:]
        centre = (h // 2, w // 2)
        crops = []  # (first dst unit, rows [n, C_src, kh, kw] cropped to their own support, top, left)
        for start in range(0, n_dst, chunk):
            grad = _rows(model, src, dst, input_shape, torch.arange(start, min(start + chunk, n_dst), device=device),
                         centre, dtype)  # [n, C_src, h_src, w_src]
            support = grad.ne(0).flatten(0, 1).any(dim=0)  # [h_src, w_src]
            if support.any():
                [(top, bottom)] = spans(support.any(dim=1)[None])
                [(left, right)] = spans(support.any(dim=0)[None])
                crops.append((start, grad[..., top:bottom, left:right], top, left))
    if not crops:
        raise ValueError("dst does not depend on src")
    top, left = min(t for _, _, t, _ in crops), min(l for _, _, _, l in crops)
    bottom = max(t + rows.shape[-2] for _, rows, t, _ in crops)
    right = max(l + rows.shape[-1] for _, rows, _, l in crops)
    weights = torch.zeros(n_dst, crops[0][1].shape[1], bottom - top, right - left, dtype=dtype, device=device)
    for start, rows, t, l in crops:
        weights[start:start + len(rows), :, t - top:t - top + rows.shape[-2], l - left:l - left + rows.shape[-1]] = rows
    return Kernels(weights, centre, (top, left))


def strongest(weights: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each dst unit's k strongest inputs and each src unit's k strongest outputs, by kernel L2 norm.

    ``weights`` [dst, src, kh, kw] -> (pairs [E, 2] long (dst, src) in row-major order, without duplicates; signed
    strengths [E], the norm times the sign of the kernel's sum, + when it sums to 0). Zero kernels are never listed.
    Ties are broken towards the lower index, so the result is deterministic.
    """
    norms = weights.flatten(2).norm(dim=2)  # [dst, src]
    chosen = torch.zeros_like(norms, dtype=torch.bool)
    by_dst = norms.sort(dim=1, descending=True, stable=True).indices[:, :k]  # [dst, k] src indices
    chosen.scatter_(1, by_dst, True)
    by_src = norms.sort(dim=0, descending=True, stable=True).indices[:k]  # [k, src] dst indices
    chosen.scatter_(0, by_src, True)
    pairs = (chosen & (norms > 0)).nonzero()  # [E, 2]
    sums = weights.flatten(2).sum(dim=2)[pairs[:, 0], pairs[:, 1]]  # [E]
    signs = torch.where(sums >= 0, 1.0, -1.0).to(norms.dtype)
    return pairs, norms[pairs[:, 0], pairs[:, 1]] * signs


def kernel_image(kernel: torch.Tensor, scale: float) -> torch.Tensor:
    """A kernel as a picture [3, kh, kw] in [0, 1].

    [kh, kw]: a diverging map, white at 0 towards orange-red for positive and blue for negative weights, saturating at
    |value| = ``scale`` (pass one scale for all kernels that will be compared). [3, kh, kw] (a first layer's RGB
    kernel): the colour the kernel responds to, grey at 0, each channel 0.5 + 0.5 * value / scale, clipped.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    strength = (kernel.detach().float() / scale).clamp(-1, 1)
    if kernel.dim() == 3:
        return 0.5 + 0.5 * strength
    positive = torch.tensor(POSITIVE, device=kernel.device).view(3, 1, 1)
    negative = torch.tensor(NEGATIVE, device=kernel.device).view(3, 1, 1)
    target = torch.where(strength >= 0, positive, negative)  # [3, kh, kw]
    return 1 + strength.abs() * (target - 1)
