"""Dataset examples of every unit of some layers, gathered in one pass over a dataset.

A unit's activation on an image is its channel's spatial max, located at a cell of the activation grid (as
Microscope located its examples). Each batch updates, per layer, a running top-k by a ``topk`` over the kept k and the
batch's values together: a few tensor operations per layer and batch, no per-unit or per-image Python. Fed from a
forward hook (``render.hooks.stream``), each layer's activations are reduced as they are made and then dropped. The
same pass keeps every unit's value on a seeded sample of the images, from which the unit's quartiles come and the
"middle" examples are drawn: images whose activation lies between the unit's quartiles, so that a reader can tell a
selective unit (middle examples barely move it) from a busy one.

Activations come in one shape for conv and token layers: [batch, units, positions].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Ranked:
    """One layer's examples. Images are dataset positions; cells are flat positions in the activation grid."""

    top_values: torch.Tensor  # [units, k] descending; fewer than k images leave -inf at the end
    top_images: torch.Tensor  # [units, k] long
    top_cells: torch.Tensor  # [units, k] long
    middle_values: torch.Tensor  # [units, m] descending; NaN where fewer than m images lie between the quartiles
    middle_images: torch.Tensor  # [units, m] long (-1 where missing)
    middle_cells: torch.Tensor  # [units, m] long
    quartiles: torch.Tensor  # [units, 3]: q25, q50, q75 over the sample
    images: int  # how many images were ranked


class _Running:
    """One layer's running top-k and its sampled values."""

    def __init__(self, units: int, k: int, device: torch.device):
        self.values = torch.full((units, k), float("-inf"), device=device)  # [units, k]
        self.images = torch.full((units, k), -1, dtype=torch.long, device=device)
        self.cells = torch.zeros((units, k), dtype=torch.long, device=device)
        self.sampled: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (values, cells, images)
        self.seen = 0

    def update(self, acts: torch.Tensor, images: torch.Tensor, sampled: torch.Tensor) -> None:
        """acts: [batch, units, positions]; images: [batch] dataset positions; sampled: [batch] bool, the images of
        the sample.

        The spatial max without its position (``amax``) is several times cheaper than with it on the CPU, so the
        cell is found only where it is needed: for the sampled images (whose cells a middle example may need) and
        for the images that enter a unit's top k in this batch, which grow rare as the pass goes on. A batch mostly
        of sampled images takes the max with positions once for all of it."""
        k = self.values.shape[1]
        if sampled.sum() * 2 >= len(images):
            values, all_cells = acts.max(dim=2)  # [batch, units] each
            kept_values, kept_cells = values[sampled], all_cells[sampled]
        else:
            values, all_cells = acts.amax(dim=2), None
            kept_values, kept_cells = acts[sampled].max(dim=2) if sampled.any() else (None, None)
        pooled = torch.cat([self.values, values.T], dim=1)  # [units, k + batch]
        best, at = pooled.topk(k, dim=1)  # [units, k]
        if all_cells is not None:
            cells = torch.cat([self.cells, all_cells.T], dim=1).gather(1, at)
        else:
            cells = torch.cat([self.cells, self.cells.new_zeros(values.T.shape)], dim=1).gather(1, at)
            units, slots = (at >= k).nonzero(as_tuple=True)  # the places this batch's images took
            rows = at[units, slots] - k
            cells[units, slots] = acts[rows, units].argmax(dim=1)  # [entered, positions] -> [entered]
        self.images = torch.cat([self.images, images.expand(len(at), -1)], dim=1).gather(1, at)
        self.values, self.cells = best, cells
        if kept_values is not None and len(kept_values):
            self.sampled.append((kept_values.cpu(), kept_cells.cpu(), images[sampled].cpu()))
        self.seen += len(images)


class ExampleCollector:
    """Feed it each batch's activations of every layer (``update_layer``, from a hook as the forward pass makes
    them); ``ranked(layer)`` once the pass is over.

    ``sample``: the dataset positions whose values are kept for quartiles and middle examples (a seeded draw, so
    runs agree). ``middle``: middle examples per unit, drawn with ``seed``.
    """

    def __init__(self, units: dict[str, int], k: int, sample: torch.Tensor, middle: int, seed: int = 0,
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.k, self.middle, self.seed = k, middle, seed
        self.sample = sample.to(self.device)  # [s] dataset positions
        self.layers = {name: _Running(n, k, self.device) for name, n in units.items()}

    @property
    def images(self) -> int:
        """Images ranked so far (by the layer that has seen the fewest)."""
        return min(running.seen for running in self.layers.values())

    def update_layer(self, name: str, acts: torch.Tensor, images: torch.Tensor) -> None:
        """acts: [batch, units, positions] of one layer; images: [batch] the dataset positions of the batch."""
        images = images.to(self.device)
        self.layers[name].update(acts, images, torch.isin(images, self.sample))

    def ranked(self, layer: str) -> Ranked:
        running = self.layers[layer]
        units = running.values.shape[0]
        if running.sampled:
            values, cells, images = (torch.cat(parts) for parts in zip(*running.sampled))  # [s, units] x2, [s]
        else:
            values, cells, images = torch.empty(0, units), torch.empty(0, units, dtype=torch.long), torch.empty(0)
        quartiles = (values.quantile(torch.tensor([0.25, 0.5, 0.75]), dim=0).T if len(values)
                     else torch.full((units, 3), float("nan")))  # [units, 3]
        middle_values, middle_images, middle_cells = self._middle(values, cells, images.long(), quartiles)
        return Ranked(running.values.cpu(), running.images.cpu(), running.cells.cpu(), middle_values, middle_images,
                      middle_cells, quartiles, running.seen)

    def _middle(self, values: torch.Tensor, cells: torch.Tensor, images: torch.Tensor,
                quartiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per unit, ``middle`` sampled images between its quartiles, drawn by seeded random keys: the images inside
        the band get a uniform key, those outside -1, and the ``middle`` largest keys win. Returned highest first."""
        units = quartiles.shape[0]
        m = min(self.middle, len(values))
        if m == 0:
            return (torch.full((units, 0), float("nan")), torch.full((units, 0), -1, dtype=torch.long),
                    torch.zeros((units, 0), dtype=torch.long))
        inside = (values >= quartiles[:, 0]) & (values <= quartiles[:, 2])  # [s, units]
        keys = torch.rand(values.shape, generator=torch.Generator().manual_seed(self.seed))
        chosen = torch.where(inside, keys, -1.0).topk(m, dim=0).indices  # [m, units]
        found = inside.gather(0, chosen)  # [m, units]
        picked = values.gather(0, chosen).masked_fill(~found, float("nan"))
        order = picked.nan_to_num(float("-inf")).argsort(dim=0, descending=True)  # highest first, missing last
        chosen, picked = chosen.gather(0, order), picked.gather(0, order)
        found = found.gather(0, order)
        middle_images = images[chosen].masked_fill(~found, -1)
        return picked.T.contiguous(), middle_images.T.contiguous(), cells.gather(0, chosen).T.contiguous()


def sample_positions(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """A seeded draw of ``size`` of ``n`` dataset positions (all of them when n <= size), ascending."""
    if n <= size:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values
