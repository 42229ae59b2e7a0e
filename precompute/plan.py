"""What a precompute run will do: validated layer/unit selections cut into fixed render batches. No torch here, so
bad input fails in milliseconds with a clear message, before any model loads.

Batches are cut from the requested units in order, so the same request always yields the same batches; that is what
makes a resumed run produce the same images (and hashes) as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

from precompute.registry import LayerSpec, ModelSpec


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class Batch:
    layer: LayerSpec
    objective: str
    units: tuple[int, ...]


def parse_units(text: str) -> list[int]:
    """'0-15,20,31' -> [0..15, 20, 31] (ranges inclusive, sorted, deduplicated)."""
    units: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, dash, last = part.partition("-")
        try:
            lo, hi = int(first), int(last) if dash else int(first)
        except ValueError:
            raise PlanError(f"bad unit selection {part!r}: use numbers and ranges like 0-15,20") from None
        if lo < 0 or hi < lo:
            raise PlanError(f"bad unit range {part!r}: need 0 <= start <= end")
        units.update(range(lo, hi + 1))
    if not units:
        raise PlanError("empty unit selection")
    return sorted(units)


def select(spec: ModelSpec, layers: list[str] | None, units: list[int] | None) -> list[tuple[LayerSpec, list[int]]]:
    """The (layer, units) pairs to render. ``units`` applies to every chosen layer, clipped to each layer's size."""
    try:
        chosen = [spec.layer(name) for name in layers] if layers else list(spec.layers)
    except KeyError as err:
        raise PlanError(err.args[0]) from None
    if units is not None:
        widest = max(layer.units for layer in chosen)
        if units[-1] >= widest:
            raise PlanError(f"unit {units[-1]} out of range: the widest chosen layer has {widest} units (0-{widest - 1})")
    return [(layer, [u for u in units if u < layer.units] if units is not None else list(range(layer.units)))
            for layer in chosen]


def batches(selection: list[tuple[LayerSpec, list[int]]], objectives: list[str], batch_size: int) -> list[Batch]:
    if batch_size < 1:
        raise PlanError("batch size must be at least 1")
    return [Batch(layer, objective, tuple(units[i:i + batch_size]))
            for layer, units in selection for objective in objectives
            for i in range(0, len(units), batch_size)]
