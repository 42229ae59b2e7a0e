"""The atlas as Parquet tables for pandas, DuckDB or Polars users: one file per table, every row naming its model,
layer and unit as the site's URLs do (so tables join on those names, and ``url`` links each row to its page), and
each circuit also as circuit-tracer's graph JSON (``circuit-tracer/{model}/{circuit}.json``, the site's
``graph.json``). Columns are typed, JSON kept only for free-form parts (model cards, circuits' ``params``); the README
("Export") lists them.

Read one layer (or circuit) at a time and written as a row group each, so memory stays that of one layer however
large the atlas. Needs pyarrow (``pip install 'atlascope[export]'``), no torch or numpy.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from server.circuit_tracer import TracerGraph, tracer_graph
from server.circuit_wiring import is_met
from server.export.site import write_file
from server.urls import asset_url, circuit_graph_url, circuit_url, model_url, unit_url
from store import Atlas
from store.keys import ContextKey, CropKey, ModelKind, Stat
from store.schema import Asset, Circuit, CircuitNode, Edge, Example, Layer, Model, Unit, UnitImage

STRING, FLOAT, INT = pa.string(), pa.float64(), pa.int64()
TOKEN_EFFECT = pa.struct([("token", STRING), ("id", INT), ("value", FLOAT)])
WHERE = [("model", STRING), ("layer", STRING), ("unit", INT)]  # a unit, as its URL names it
SCHEMAS = {
    "models": pa.schema([("model", STRING), ("title", STRING), ("kind", STRING), ("description", STRING),
                         ("source", STRING), ("card", STRING), ("url", STRING)]),
    "units": pa.schema([
        *WHERE, ("layer_kind", STRING), ("layer_position", INT), ("label", STRING), ("url", STRING),
        ("images", pa.list_(pa.struct([("kind", STRING), ("url", STRING), ("activation", FLOAT)]))),
        ("n", INT), ("measure", STRING),
        ("dataset_mean", FLOAT), ("dataset_std", FLOAT), ("dataset_max", FLOAT), ("quartiles", pa.list_(FLOAT)),
        ("examples_n", INT),
        ("density", FLOAT), ("mean", FLOAT), ("max", FLOAT), ("min", FLOAT), ("top_tokens", pa.list_(STRING)),
        ("histogram", pa.struct([("edges", pa.list_(FLOAT)), ("counts", pa.list_(INT)), ("clipped", INT)])),
        ("promoted", pa.list_(TOKEN_EFFECT)), ("suppressed", pa.list_(TOKEN_EFFECT))]),
    "contexts": pa.schema([*WHERE, ("kind", STRING), ("rank", INT), ("activation", FLOAT),
                           ("tokens", pa.list_(STRING)), ("values", pa.list_(FLOAT)), ("position", INT),
                           ("document", STRING), ("offset", INT), ("band", INT)]),
    "examples": pa.schema([*WHERE, ("kind", STRING), ("rank", INT), ("activation", FLOAT), ("image", STRING),
                           ("dataset", STRING), ("item", STRING), ("cell", pa.list_(INT)), ("grid", pa.list_(INT)),
                           ("box", pa.list_(INT))]),
    "edges": pa.schema([("model", STRING), ("src_layer", STRING), ("src_unit", INT), ("dst_layer", STRING),
                        ("dst_unit", INT), ("kind", STRING), ("weight", FLOAT), ("circuit", STRING),
                        ("kernel", STRING)]),
    "circuits": pa.schema([("model", STRING), ("circuit", STRING), ("task", STRING), ("met", pa.bool_()),
                           ("target_loss", FLOAT), ("loss", FLOAT), ("n_nodes", INT), ("n_edges", INT),
                           ("url", STRING), ("graph", STRING), ("params", STRING)]),
    "circuit_nodes": pa.schema([*WHERE, ("circuit", STRING), ("tau", FLOAT)]),
}
INT_FIELDS = {Stat.N, Stat.EXAMPLES_N}  # counts, which JSON may hold as 2.0


def _unit_row(model: Model, layer: Layer, unit: Unit, images: list[dict]) -> dict[str, Any]:
    stats = unit.stats or {}
    row = {key: stats.get(key) for key in (Stat.MEASURE, Stat.DATASET_MEAN, Stat.DATASET_STD, Stat.DATASET_MAX,
                                            Stat.QUARTILES, Stat.DENSITY, Stat.MEAN, Stat.MAX, Stat.MIN,
                                            Stat.TOP_TOKENS, Stat.HISTOGRAM)}
    row.update({key: None if stats.get(key) is None else int(stats[key]) for key in INT_FIELDS})
    effects = stats.get(Stat.LOGIT_EFFECTS) or {}
    return {**row, "model": model.slug, "layer": layer.name, "unit": unit.index, "layer_kind": layer.kind,
            "layer_position": layer.position, "label": unit.label, "url": unit_url(model.slug, layer.name, unit.index),
            "images": images, "promoted": effects.get("promoted"), "suppressed": effects.get("suppressed")}


def _layer_tables(session: Session, model: Model, layer: Layer) -> dict[str, list[dict[str, Any]]]:
    """The rows of one layer's units, their examples (vision) or contexts (language), and the edges out of them."""
    images: dict[int, list[dict]] = defaultdict(list)
    for unit_id, kind, sha256, media_type, activation in session.execute(
            select(UnitImage.unit_id, UnitImage.kind, UnitImage.asset_sha256, Asset.media_type, UnitImage.activation)
            .join(Asset, Asset.sha256 == UnitImage.asset_sha256).join(Unit, Unit.id == UnitImage.unit_id)
            .where(Unit.layer_id == layer.id).order_by(UnitImage.kind)):
        images[unit_id].append({"kind": kind, "url": asset_url(sha256, media_type), "activation": activation})
    units = [_unit_row(model, layer, unit, images[unit.id]) for unit in session.scalars(
        select(Unit).where(Unit.layer_id == layer.id).order_by(Unit.index))]

    where = {"model": model.slug, "layer": layer.name}
    contexts, examples = [], []
    for index, kind, rank, activation, source, sha256, media_type in session.execute(
            select(Unit.index, Example.kind, Example.rank, Example.activation, Example.source, Example.asset_sha256,
                   Asset.media_type).join(Unit, Unit.id == Example.unit_id)
            .outerjoin(Asset, Asset.sha256 == Example.asset_sha256)
            .where(Unit.layer_id == layer.id).order_by(Unit.index, Example.kind, Example.rank)):
        row = {**where, "unit": index, "kind": kind, "rank": rank, "activation": activation}
        if model.kind == ModelKind.LANGUAGE:
            contexts.append({**row, **{key: source.get(key) for key in ContextKey}})
        else:
            examples.append({**row, "image": asset_url(sha256, media_type) if sha256 else None,
                             **{key: source.get(key) for key in CropKey}})

    src, dst, dst_layer = aliased(Unit), aliased(Unit), aliased(Layer)
    edges = [{"model": model.slug, "src_layer": layer.name, "src_unit": src_index, "dst_layer": dst_name,
              "dst_unit": dst_index, "kind": kind, "weight": weight, "circuit": circuit,
              "kernel": asset_url(sha256, media_type) if sha256 else None}
             for src_index, dst_name, dst_index, kind, weight, circuit, sha256, media_type in session.execute(
                 select(src.index, dst_layer.name, dst.index, Edge.kind, Edge.weight, Circuit.slug,
                        Edge.asset_sha256, Asset.media_type)
                 .join(src, src.id == Edge.src_unit_id).join(dst, dst.id == Edge.dst_unit_id)
                 .join(dst_layer, dst_layer.id == dst.layer_id)
                 .outerjoin(Circuit, Circuit.id == Edge.circuit_id).outerjoin(Asset, Asset.sha256 == Edge.asset_sha256)
                 .where(src.layer_id == layer.id).order_by(Edge.circuit_id.is_not(None), Edge.circuit_id, src.index,
                                                           func.abs(Edge.weight).desc()))]
    return {"units": units, "contexts": contexts, "examples": examples, "edges": edges}


def _circuit_tables(session: Session, model: Model, circuit: Circuit) -> dict[str, list[dict[str, Any]]]:
    nodes = [{"model": model.slug, "layer": layer, "unit": index, "circuit": circuit.slug, "tau": tau}
             for layer, index, tau in session.execute(
                 select(Layer.name, Unit.index, CircuitNode.score).join(Unit, Unit.id == CircuitNode.unit_id)
                 .join(Layer, Layer.id == Unit.layer_id).where(CircuitNode.circuit_id == circuit.id)
                 .order_by(Layer.position, Unit.index))]
    row = {"model": model.slug, "circuit": circuit.slug, "task": circuit.task, "met": is_met(circuit),
           "target_loss": circuit.target_loss, "loss": circuit.loss, "n_nodes": circuit.n_nodes,
           "n_edges": circuit.n_edges, "url": circuit_url(model.slug, circuit.slug),
           "graph": circuit_graph_url(model.slug, circuit.slug), "params": json.dumps(circuit.params)}
    return {"circuits": [row], "circuit_nodes": nodes}


def tracer_file(model: str, circuit: str) -> PurePosixPath:
    return PurePosixPath("circuit-tracer", model, f"{circuit}.json")


def export_tables(atlas: Atlas, out: Path, progress: Callable[[int, int], None]) -> dict[str, int]:
    """Write ``{table}.parquet`` for every table of ``SCHEMAS`` and each circuit's tracer JSON into the empty
    directory ``out``; ``progress(done, total)`` counts layers and circuits. Returns each table's row count."""
    counts = dict.fromkeys(SCHEMAS, 0)
    with atlas.sessions() as session, ExitStack() as files:
        writers = {name: files.enter_context(pq.ParquetWriter(out / f"{name}.parquet", schema))
                   for name, schema in SCHEMAS.items()}

        def write(rows: dict[str, list[dict[str, Any]]]) -> None:
            for name, table_rows in rows.items():
                if table_rows:
                    writers[name].write_table(pa.Table.from_pylist(table_rows, schema=SCHEMAS[name]))
                    counts[name] += len(table_rows)

        models = session.scalars(select(Model).order_by(Model.id)).all()
        write({"models": [{"model": m.slug, "title": m.title, "kind": m.kind, "description": m.description,
                           "source": m.source, "card": json.dumps(m.card), "url": model_url(m.slug)} for m in models]})
        work = [(model, layer) for model in models for layer in model.layers]
        work += [(model, circuit) for model in models for circuit in session.scalars(
            select(Circuit).where(Circuit.model_id == model.id).order_by(Circuit.slug))]
        for done, (model, item) in enumerate(work, 1):
            if isinstance(item, Layer):
                write(_layer_tables(session, model, item))
            else:
                write(_circuit_tables(session, model, item))
                graph = TracerGraph.model_validate(tracer_graph(session, model.slug, item.slug))
                write_file(out, tracer_file(model.slug, item.slug), graph.model_dump_json().encode())
            progress(done, len(work))
    return counts
