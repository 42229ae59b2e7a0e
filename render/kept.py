"""The few best contexts of every unit of a stream, kept across batches (``render.contexts``): top ones by activation,
random ones by key. Each unit's set depends on its own values alone, and windows move only when their context enters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

WINDOW = 32  # tokens of a context window


@dataclass(frozen=True)
class Examples:
    """Contexts of every unit, ``k`` slots each, in order (top: highest first; random: by position). An empty slot
    has position -1."""

    score: torch.Tensor  # [U, k] what they were chosen by: the activation (top), the random key (random)
    value: torch.Tensor  # [U, k] the activation at the marked token
    position: torch.Tensor  # [U, k] int64: the marked token's offset in the stream
    start: torch.Tensor  # [U, k] int64: offset of the window's first token
    length: torch.Tensor  # [U, k] int64: tokens in the window, at most WINDOW
    window: torch.Tensor  # [U, k, WINDOW] the activation at each token of the window (past ``length``: unspecified)

    def __getitem__(self, units: slice) -> Examples:
        return Examples(**{f.name: getattr(self, f.name)[units] for f in fields(self)})


class Kept:
    """The ``k`` best contexts of every unit so far, in fixed slots: a context that enters takes the slot of the
    one it pushes out, so a batch moves only the windows of its own entrants (few, once the pass is under way)."""

    def __init__(self, units: int, k: int, largest: bool, device: torch.device, dtype: torch.dtype):
        self.k, self.largest = k, largest
        self.score = torch.full((units, k), -torch.inf if largest else torch.inf, dtype=dtype, device=device)
        self.value = torch.zeros(units, k, device=device)
        self.position = torch.full((units, k), -1, dtype=torch.int64, device=device)
        self.start = torch.zeros(units, k, dtype=torch.int64, device=device)
        self.length = torch.zeros(units, k, dtype=torch.int64, device=device)
        self.window = torch.zeros(units, k, WINDOW, device=device)

    def bar(self) -> torch.Tensor:
        """[U] the score a candidate must beat: the worst kept (or an empty slot's)."""
        return self.score.amin(dim=1) if self.largest else self.score.amax(dim=1)

    def offer(self, score: torch.Tensor, where: torch.Tensor, at: torch.Tensor,
              fetch: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]) -> None:
        """Candidates of a batch ``score`` [U, c], from stream offset ``where`` [U, c] on, found ``at`` [U, c];
        ``fetch(units, at)`` ([E] each) gives the entrants' value, position, start, length ([E] each) and window
        ([E, WINDOW]). A unit keeps its k best by score, the earlier of equal ones (kept ones are earlier than a
        later batch's), so what it keeps depends on its own values alone, not on which candidates other units
        brought into the batch."""
        worst = -torch.inf if self.largest else torch.inf
        better = score > self.bar()[:, None] if self.largest else score < self.bar()[:, None]
        pool = torch.cat([self.score, torch.where(better, score, worst)], dim=1)  # [U, k + c]
        in_order = torch.cat([self.position, where], dim=1).argsort(dim=1, stable=True)  # empty slots (-1) first
        ranked = pool.gather(1, in_order).sort(dim=1, descending=self.largest, stable=True).indices
        chosen = torch.zeros_like(pool, dtype=torch.bool).scatter_(1, in_order.gather(1, ranked[:, :self.k]), True)
        unit, slot = (~chosen[:, :self.k]).nonzero(as_tuple=True)  # slots given up, by unit
        entrant = chosen[:, self.k:].nonzero(as_tuple=True)[1]  # their new contexts: as many per unit, same order
        if not len(unit):
            return
        self.score[unit, slot] = score[unit, entrant]
        fetched = fetch(unit, at[unit, entrant])
        for name, values in zip(("value", "position", "start", "length", "window"), fetched):
            getattr(self, name)[unit, slot] = values

    def examples(self, order: torch.Tensor) -> Examples:
        """The kept contexts with the slots of each unit in ``order`` [U, k]."""
        return Examples(*(t.gather(1, order) for t in (self.score, self.value, self.position, self.start,
                                                        self.length)),
                        self.window.gather(1, order[..., None].expand(-1, -1, WINDOW)))
