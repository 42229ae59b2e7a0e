"""What the pages share: lookups that 404 with a precise message, and the small dicts every page links with.

Every linked thing carries ``url`` and ``json_url``. Anything a client typed is echoed back shortened, so a
100 KB path gets a readable message, not a 100 KB one.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from server.errors import NotFound
from server.urls import DEFAULT_KIND, asset_url, circuit_url, layer_url, links, model_url, unit_url
from store.keys import CardKey, CircuitKey, ModelKind, Stat
from store.schema import Asset, Circuit, Layer, Model, Run, Unit, UnitImage

THUMB_KIND = DEFAULT_KIND  # the image kind shown in layer grids by default and counted as "rendered"
ECHO_CHARS = 80  # how much of a client's input an error message repeats: a whole asset name, not a 100 KB path
MAX_DIGITS = 18  # any number longer than this is out of every range (and int() of 4,300+ digits raises)


def echo(raw: str) -> str:
    return repr(raw if len(raw) <= ECHO_CHARS else raw[:ECHO_CHARS] + "…")


def find_model(session: Session, slug: str) -> Model:
    model = session.scalar(select(Model).where(Model.slug == slug))
    if model is None:
        raise NotFound(f"model {echo(slug)} not found")
    return model


def find_layer(session: Session, model: Model, name: str) -> Layer:
    layer = session.scalar(select(Layer).where(Layer.model_id == model.id, Layer.name == name))
    if layer is None:
        raise NotFound(f"layer {echo(name)} not found in model {model.slug!r}")
    return layer


def find_circuit(session: Session, model: Model, slug: str) -> Circuit:
    circuit = session.scalar(select(Circuit).where(Circuit.model_id == model.id, Circuit.slug == slug))
    if circuit is None:
        have = session.scalars(select(Circuit.slug).where(Circuit.model_id == model.id).order_by(Circuit.slug)).all()
        raise NotFound(f"circuit {echo(slug)} not found in model {model.slug!r}; "
                       + (f"it has circuits for: {', '.join(have)}" if have else "it has no circuits"))
    return circuit


UNIT_NUMBER = re.compile(r"0|-?[1-9][0-9]*")  # one way to write each number: no sign on 0, no leading zeros


def unit_number(raw: str) -> int | None:
    """The number a path segment writes, if it writes one the canonical way and short enough to be a unit's."""
    return int(raw) if UNIT_NUMBER.fullmatch(raw) and len(raw.lstrip("-")) <= MAX_DIGITS else None


def parse_unit(layer: Layer, raw: str) -> int:
    """The unit a path names. Numbers are written one way only, so each unit has exactly one URL to cite."""
    if not UNIT_NUMBER.fullmatch(raw):
        raise NotFound(f"unit {echo(raw)} not found: units are numbered 0, 1, 2, ...")
    have = f"{layer.n_units} units (0–{layer.n_units - 1})" if layer.n_units else "no units"
    index = unit_number(raw)
    if index is None:
        raise NotFound(f"unit {echo(raw)} out of range: layer {layer.name} has {have}")
    if not 0 <= index < layer.n_units:
        raise NotFound(f"unit {index} out of range: layer {layer.name} has {have}")
    return index


def parse_page(raw: str, pages: int) -> int:
    if not re.fullmatch(r"[1-9][0-9]{0,%d}" % (MAX_DIGITS - 1), raw) or not 1 <= int(raw) <= pages:
        raise NotFound(f"page {echo(raw)} not found: pages run from 1 to {pages}")
    return int(raw)


def untrained(model: Model) -> bool:
    """Whether the model's weights are seeded random ones (``--random-weights``): its card's ``weights.random``.
    Pages label such a model everywhere, as what its units show is the architecture's, not anything learned."""
    weights = (model.card or {}).get(CardKey.WEIGHTS)
    return isinstance(weights, dict) and weights.get("random") is True


def model_ref(model: Model) -> dict[str, Any]:
    return {"slug": model.slug, "title": model.title, "kind": model.kind, **links(model_url(model.slug))}


def layer_ref(model: Model, layer: Layer) -> dict[str, Any]:
    return {
        "name": layer.name,
        "kind": layer.kind,
        "shape": layer.shape,
        "n_units": layer.n_units,
        "description": layer.description,
        **links(layer_url(model.slug, layer.name)),
    }


def unit_ref(model_slug: str, layer_name: str, index: int) -> dict[str, Any]:
    return {"model": model_slug, "layer": layer_name, "index": index, **links(unit_url(model_slug, layer_name, index))}


def circuit_summary(model: Model, circuit: Circuit) -> dict[str, Any]:
    """A circuit as lists show it. ``met`` falls back to comparing the loss with the target for a row whose params
    lack the flag."""
    params = circuit.params or {}
    met = (params.get(CircuitKey.TARGET) or {}).get("met")
    held_out = ((params.get(CircuitKey.FAITHFULNESS) or {}).get("circuit_mean") or {}).get("loss")
    return {
        "slug": circuit.slug,
        "task": circuit.task,
        "target_loss": circuit.target_loss,
        "loss": circuit.loss,
        "met": circuit.loss <= circuit.target_loss if met is None else bool(met),
        "heldout_loss": held_out,
        "n_nodes": circuit.n_nodes,
        "n_edges": circuit.n_edges,
        **links(circuit_url(model.slug, circuit.slug)),
    }


def asset_dict(asset: Asset | None) -> dict[str, Any] | None:
    if asset is None:
        return None
    return {
        "url": asset_url(asset.sha256, asset.media_type),
        "sha256": asset.sha256,
        "width": asset.width,
        "height": asset.height,
        "media_type": asset.media_type,
    }


def image_dict(image: UnitImage, stats: dict[str, Any]) -> dict[str, Any]:
    """A unit image, with its activation put next to what the dataset makes the unit do.

    The dataset statistics measure the channel objective (spatial mean), so only channel images are compared.
    """
    comparable = image.kind == THUMB_KIND and image.activation is not None
    act = image.activation
    mean, std, top = (stats.get(key) if comparable else None for key in ("dataset_mean", "dataset_std", "dataset_max"))
    return {
        "kind": image.kind,
        **asset_dict(image.asset),
        "params": image.params,
        "activation": act,
        "times_dataset_max": act / top if top else None,
        "dataset_z": (act - mean) / std if mean is not None and std else None,
    }


def stat(name: Stat) -> Any:
    """One key of ``Unit.stats`` as an SQL expression (SQLite's JSON functions), null where it is missing."""
    return func.json_extract(Unit.stats, f"$.{name}")


def rendered_counts(session: Session, column: Any, *where: Any) -> dict[int, int]:
    """How many units the job has done, grouped by ``column`` (``Layer.id`` or ``Layer.model_id``): units with a
    thumbnail (vision) or with statistics (language models, which have no pictures). A language model's unit gets
    its statistics all at once, so a non-empty ``stats`` says it is measured: comparing the text is several times
    faster than parsing every unit's JSON, which on a model of tens of thousands of units is what this page waits on."""
    pictured = select(UnitImage.unit_id).where(UnitImage.kind == THUMB_KIND)
    query = (
        select(column, func.count())
        .select_from(Unit)
        .join(Layer, Layer.id == Unit.layer_id)
        .join(Model, Model.id == Layer.model_id)
        .where(or_(Unit.id.in_(pictured), (Model.kind == ModelKind.LANGUAGE) & (Unit.stats != {})), *where)
        .group_by(column)
    )
    return dict(session.execute(query).all())


def run_progress(run: Run, writer_active: bool, latest: bool) -> dict[str, Any]:
    """A run's progress as the job last committed it, and whether it is running, was interrupted, or finished.

    Only the latest unfinished run can be the one holding the writer's lock: one writer at a time.
    """
    if run.finished_at is not None:
        state = "finished"
    else:
        state = "running" if writer_active and latest else "interrupted"
    return {**(run.progress or {}), "state": state}
