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
    """Input support of slot b's sum over its cells c of ``weightings[b] . layer[b, :, cells[b, c]]``: [n, H, W]
    bool. ``cells``: [n, k, 2] (y, x), k cells per slot."""
    x = torch.zeros(len(cells), *shape, dtype=weightings.dtype, device=weightings.device, requires_grad=True)
    acts = activations(model, {"layer": layer}, x)["layer"]  # [n, channels, h, w]
    slots = torch.arange(len(cells), device=cells.device)[:, None]  # [n, 1]
    picked = acts[slots, :, cells[..., 0], cells[..., 1]]  # [n, k, channels]
    (grad,) = torch.autograd.grad((picked * weightings[:, None]).sum(), x)  # [n, 3, H, W]
    return grad.ne(0).any(dim=1)


def runs(profile: torch.Tensor) -> list[tuple[int, int]]:
    """[L] bool -> (first, last + 1) of each maximal run of True, left to right."""
    padded = torch.cat([torch.zeros(1, dtype=torch.int8), profile.to(torch.int8), torch.zeros(1, dtype=torch.int8)])
    edges = padded.diff()
    return list(zip((edges == 1).nonzero().flatten().tolist(), (edges == -1).nonzero().flatten().tolist()))


def _outer(found: list[tuple[int, int]]) -> tuple[int, int]:
    """(first, last + 1) over all runs: the extent of one cell's support, gaps included."""
    if not found:
        raise ValueError("empty support: the layer does not depend on what it is differentiated against")
    return found[0][0], found[-1][1]


def _axis_extents(support_of, cells: torch.Tensor, axis: int, spacing: int) -> list[tuple[int, int]]:
    """Each of ``cells``' (a line of the grid along ``axis``: 1 for a row's columns, 0 for a column's rows) input
    extent along that axis. Cells ``spacing`` apart share one backward pass when their extents come out as separate
    runs in order, one per cell, as they do when ``spacing`` exceeds a receptive field's width; a group whose runs do
    not come out one per cell (overlapping or gapped fields) is redone one cell per pass."""
    extents: dict[int, tuple[int, int]] = {}
    groups = [list(range(offset, len(cells), spacing)) for offset in range(min(spacing, len(cells)))]
    for group, support in zip(groups, support_of([cells[group] for group in groups])):
        found = runs(support.any(dim=1 - axis))  # [H or W] profile of the group's union
        if len(found) == len(group):
            extents.update(zip(group, found))
            continue
        for index, one in zip(group, support_of([cells[[index]] for index in group])):
            extents[index] = _outer(runs(one.any(dim=1 - axis)))
    return [extents[index] for index in range(len(cells))]


def receptive_field(model: nn.Module, layer: nn.Module, input_shape: tuple[int, int, int],
                    device: torch.device | str = "cpu", chunk: int = 64) -> ReceptiveField:
    """The receptive field of every cell of ``layer`` for inputs of ``input_shape`` [3, H, W].

    ``model`` takes an image batch [B, 3, H, W] and must already be on ``device``; it is run in eval mode, linearised,
    ``chunk`` slots per batch. Cells whose fields cannot overlap share a slot (``_axis_extents``), so a large grid
    (VGG's first layers: 224 x 224) costs a few dozen backward passes rather than one per cell of its middle row and
    column.
    """
    device = torch.device(device)
    dtype = next(model.parameters()).dtype
    _, height, width = input_shape
    generator = torch.Generator().manual_seed(0)
    with frozen(model), linearized(), torch.enable_grad():
        with torch.no_grad():
            probe = activations(model, {"layer": layer}, torch.zeros(1, *input_shape, dtype=dtype, device=device))
        channels, h, w = probe["layer"].shape[1:]
        weightings = torch.randn(WEIGHTINGS, channels, generator=generator).to(device, dtype)  # [WEIGHTINGS, channels]

        def support_of(slots: list[torch.Tensor]) -> list[torch.Tensor]:
            """Each slot's ([k, 2] cells) input support [H, W], united over the weightings."""
            found = []
            for start in range(0, len(slots), chunk):
                part = slots[start:start + chunk]
                width_k = max(len(cells) for cells in part)
                # pad a slot with copies of its first cell (the union is unchanged): [n, width_k, 2]
                cells = torch.stack([torch.cat([c, c[:1].expand(width_k - len(c), 2)]) for c in part]).to(device)
                per_weighting = [_supports(model, layer, input_shape, cells, weighting.expand(len(part), channels))
                                 for weighting in weightings]
                found.extend(torch.stack(per_weighting).any(dim=0).cpu())
            return found

        centre = support_of([torch.tensor([[h // 2, w // 2]])])[0]  # [H, W]
        (top, bottom), (left, right) = _outer(runs(centre.any(dim=1))), _outer(runs(centre.any(dim=0)))
        middle_row = torch.stack([torch.full((w,), h // 2), torch.arange(w)], dim=1)  # [w, 2] (y, x)
        middle_col = torch.stack([torch.arange(h), torch.full((h,), w // 2)], dim=1)  # [h, 2]
        # cells this many apart see disjoint input, with a gap of at least one cell's stride between them
        cols = _axis_extents(support_of, middle_row, 1, -(-(right - left) * w // width) + 2)
        rows = _axis_extents(support_of, middle_col, 0, -(-(bottom - top) * h // height) + 2)
    return ReceptiveField((h, w), (height, width), tuple(rows), tuple(cols))
