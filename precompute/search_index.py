"""Writing the search index (``store.search``) from what the atlas holds: every language-model unit's top contexts and
logit effects, one layer per call. Torch-free, so an atlas made before search existed gets its index on a base
install, without loading any model:

    atlascope index --atlas DIR          (or python -m precompute.search_index --atlas DIR)

The job's ``search index`` stage (``precompute.stages.search``) indexes the same way in every run.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import typer
from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.orm import Session

from store import Atlas
from store.keys import ContextKey, ExampleKind, ModelKind, Stat
from store.schema import Example, Layer, Model, Unit
from store.search import (
    CONTEXT_BREAK, CONTEXT_TEXT, CONTEXTS, CREATE, INDEX_VERSION, INDEXED, has_index, indexed_layers, token_hits,
    token_key,
)


def layer_rows(session: Session, layer_id: int) -> dict[int, dict[str, Any]]:
    """Unit id -> what the index holds of it, for the layer's units that have top contexts or logit effects (a unit
    not measured yet has neither, and no rows): ``tokens``, each ``token_key`` -> [peaks, promotes, suppresses], and
    ``text``, its top contexts. A unit whose output reaches fewer than ten tokens lists tokens of no effect (value 0)
    among its strongest: it neither promotes nor suppresses those."""
    contexts: dict[int, list[dict]] = {}
    for unit_id, window in session.execute(
            select(Example.unit_id, Example.source).join(Unit, Unit.id == Example.unit_id)
            .where(Unit.layer_id == layer_id, Example.kind == ExampleKind.TOP).order_by(Example.unit_id, Example.rank)):
        contexts.setdefault(unit_id, []).append(window)
    effects = {unit_id: json.loads(found) for unit_id, found in session.execute(
        select(Unit.id, func.json_extract(Unit.stats, f"$.{Stat.LOGIT_EFFECTS}"))
        .where(Unit.layer_id == layer_id, func.json_extract(Unit.stats, f"$.{Stat.LOGIT_EFFECTS}").is_not(None)))}
    rows = {}
    for unit_id in sorted(contexts.keys() | effects.keys()):
        windows, effect = contexts.get(unit_id, []), effects.get(unit_id, {})
        tokens: dict[str, list] = defaultdict(lambda: [0, False, False])  # [peaks, promotes, suppresses]
        for window in windows:
            tokens[token_key(window[ContextKey.TOKENS][window[ContextKey.POSITION]])][0] += 1
        for entry in effect.get("promoted", []):
            if entry["value"] > 0:
                tokens[token_key(entry["token"])][1] = True
        for entry in effect.get("suppressed", []):
            if entry["value"] < 0:
                tokens[token_key(entry["token"])][2] = True
        tokens.pop("", None)  # whitespace alone
        rows[unit_id] = {"tokens": dict(tokens),
                         "text": CONTEXT_BREAK.join("".join(w[ContextKey.TOKENS]) for w in windows)}
    return rows


def index_layer(session: Session, layer_id: int) -> bool:
    """Bring the index's rows of one layer's units up to what the atlas holds, in the caller's transaction; True if
    it wrote them, False if the index already held exactly these rows (by their digest) in this layout."""
    if not has_index(session):
        for statement in CREATE:
            session.execute(text(statement))
    rows = layer_rows(session, layer_id)
    digest = hashlib.sha256(json.dumps(sorted(rows.items()), sort_keys=True).encode()).hexdigest()
    held = session.execute(select(indexed_layers.c.version, indexed_layers.c.digest)
                           .where(indexed_layers.c.layer_id == layer_id)).first()
    if held is not None and tuple(held) == (INDEX_VERSION, digest):
        return False
    units = select(Unit.id).where(Unit.layer_id == layer_id)
    session.execute(delete(token_hits).where(token_hits.c.unit_id.in_(units)))
    session.execute(text(f"DELETE FROM {CONTEXTS} WHERE rowid IN (SELECT id FROM units WHERE layer_id = :layer)"),
                    {"layer": layer_id})
    hits = [{"token": token, "unit_id": unit_id, "peaks": peaks, "promotes": promotes, "suppresses": suppresses}
            for unit_id, row in rows.items() for token, (peaks, promotes, suppresses) in row["tokens"].items()]
    if hits:
        session.execute(insert(token_hits), hits)
    texts = [{"id": unit_id, "text": row["text"]} for unit_id, row in rows.items() if row["text"]]
    if texts:
        session.execute(text(f"INSERT INTO {CONTEXTS} (rowid, {CONTEXT_TEXT}) VALUES (:id, :text)"), texts)
    session.execute(text(f"INSERT OR REPLACE INTO {INDEXED} (layer_id, version, digest) "
                         "VALUES (:layer, :version, :digest)"),
                    {"layer": layer_id, "version": INDEX_VERSION, "digest": digest})
    return True


def main(atlas: Path = typer.Option(..., "--atlas", help="Atlas directory whose search index to build.")) -> None:
    """Bring the search index up to what the atlas holds: every layer of its language models, one layer per
    transaction, under the writer lock; a layer the index already holds as it is is left alone."""
    from precompute.cli import _atlas_failures

    with _atlas_failures(atlas), Atlas.open_for_writing(atlas) as opened:
        with opened.sessions() as session:
            layers = [(layer.id, f"{model.slug} {layer.name}") for layer, model in session.execute(
                select(Layer, Model).join(Model, Model.id == Layer.model_id)
                .where(Model.kind == ModelKind.LANGUAGE).order_by(Model.id, Layer.position))]
        written = 0
        for layer_id, label in layers:
            with opened.batch() as session:
                if index_layer(session, layer_id):
                    written += 1
                    typer.echo(f"indexed {label}")
    typer.echo(f"search index of {atlas}: {written} of {len(layers)} language-model layers (re)indexed, the rest "
               "already held as they are")


if __name__ == "__main__":
    typer.run(main)
