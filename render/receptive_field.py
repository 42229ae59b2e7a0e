"""Which input pixels a cell of a layer's activation map sees, found from the network itself rather than from a table
of kernel sizes and strides, so it holds for any CNN (padding, pooling, concatenated branches, residual adds).

With the network linearised (render/linearize.py) the gradient of a cell with respect to the input is the same at
every input, and its nonzero support is the cell's receptive field, clipped to the image. For translation-equivariant
layers a cell's horizontal extent depends only on its column and its vertical extent only on its row, so the cells of
the middle row give every column's extent and the cells of the middle column every row's: h + w gradients describe all
h * w boxes exactly, borders included, without assuming a stride or an offset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from render.featvis import frozen
from render.hooks import activations
from render.linearize import linearized

# Each cell's gradient is taken along this many random channel weightings and their supports are united, so a pixel
# is only missed if its contributions cancel in every weighting.
WEIGHTINGS = 2


@dataclass(frozen=True)
class ReceptiveField:
    grid: tuple[int, int]  # [h, w] of the layer's activation map
    input: tuple[int, int]  # [H, W]
    rows: tuple[tuple[int, int], ...]  # [h] (top, bottom) of the input rows grid row y sees, bottom exclusive
    cols: tuple[tuple[int, int], ...]  # [w] (left, right) of the input columns grid column x sees, right exclusive

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in input pixels, right and bottom exclusive, of what cell (y, x) sees."""
        (top, bottom), (left, right) = self.rows[y], self.cols[x]
        return left, top, right, bottom


def spans(support: torch.Tensor) -> list[tuple[int, int]]:
    """[n, L] bool -> for each row, (first, last + 1) of its True entries."""
    if not support.any(dim=1).all():
        raise ValueError("empty support: the layer does not depend on what it is differentiated against")
    length = support.shape[1]
    first = support.int().argmax(dim=1)
    last = length - support.flip(1).int().argmax(dim=1)
    return list(zip(first.tolist(), last.tolist()))


def _supports(model: nn.Module, layer: nn.Module, shape: tuple[int, int, int], cells: torch.Tensor,
              weightings: torch.Tensor) -> torch.Tensor:
    """Input support of ``weightings[b] . layer[b, :, cells[b]]`` for each slot b: [n, H, W] bool."""
    x = torch.zeros(len(cells), *shape, dtype=weightings.dtype, device=weightings.device, requires_grad=True)
    acts = activations(model, {"layer": layer}, x)["layer"]  # [n, channels, h, w]
    picked = acts[torch.arange(len(cells)), :, cells[:, 0], cells[:, 1]]  # [n, channels]
    (grad,) = torch.autograd.grad((picked * weightings).sum(), x)  # [n, 3, H, W]
    return grad.ne(0).any(dim=1)


def receptive_field(model: nn.Module, layer: nn.Module, input_shape: tuple[int, int, int],
                    device: torch.device | str = "cpu", chunk: int = 64) -> ReceptiveField:
    """The receptive field of every cell of ``layer`` for inputs of ``input_shape`` [3, H, W].

    ``model`` takes an image batch [B, 3, H, W] and must already be on ``device``; it is run in eval mode, linearised,
    ``chunk`` cells per batch.
    """
    device = torch.device(device)
    dtype = next(model.parameters()).dtype
    _, height, width = input_shape
    with frozen(model), linearized(), torch.enable_grad():
        with torch.no_grad():
            probe = activations(model, {"layer": layer}, torch.zeros(1, *input_shape, dtype=dtype, device=device))
        channels, h, w = probe["layer"].shape[1:]
        middle_row = torch.stack([torch.full((w,), h // 2), torch.arange(w)], dim=1)  # [w, 2] (y, x)
        middle_col = torch.stack([torch.arange(h), torch.full((h,), w // 2)], dim=1)  # [h, 2]
        cells = torch.cat([middle_row, middle_col]).repeat(WEIGHTINGS, 1).to(device)  # [WEIGHTINGS * (w + h), 2]
        generator = torch.Generator().manual_seed(0)
        weightings = torch.randn(len(cells), channels, generator=generator).to(device, dtype)  # [n, channels]
        support = torch.cat([
            _supports(model, layer, input_shape, cells[i:i + chunk], weightings[i:i + chunk]).cpu()
            for i in range(0, len(cells), chunk)])  # [n, H, W]
    support = support.view(WEIGHTINGS, w + h, height, width).any(dim=0)  # [w + h, H, W]
    cols = spans(support[:w].any(dim=1))  # each middle-row cell's columns
    rows = spans(support[w:].any(dim=2))  # each middle-column cell's rows
    return ReceptiveField((h, w), (height, width), tuple(rows), tuple(cols))
