"""The search index: tables beside the atlas's own, which the job writes and the server reads.

For every language-model unit with top contexts or logit effects:

- ``search_tokens``, one row per token it has to do with (``token_key``: the token's text without its surrounding
  whitespace, case folded): how many of its top contexts peak on it, and whether its logit effects promote or
  suppress it. A plain table with a B-tree: a token is looked up exactly (punctuation included: ``(``, ``):``), and
  its units come ranked by that evidence, peaks first, straight from the index.
- ``search_contexts``, an SQLite FTS5 table (its rowid the unit's id) holding the text of its top contexts, for
  words and phrases.

``search_layers`` says which layers are indexed, by which version of this layout, from what (a digest of the rows),
so a rerun rewrites nothing when nothing changed and a layout change here is rebuilt, not misread.

The index stands outside the atlas's format version (``store.schema.FORMAT_VERSION``): an atlas without it, or with
some models not yet indexed, is served all the same, and search says what is missing and how to build it. No foreign
keys: a unit's rows go with its layer's next indexing.
"""

from __future__ import annotations

from sqlalchemy import Select, column, select, table, text
from sqlalchemy.orm import Session

from store.keys import ModelKind
from store.schema import Layer, Model

# Bump when the tables or what goes into them change: layers indexed by another version count as not indexed.
INDEX_VERSION = 1

TOKENS = "search_tokens"
CONTEXTS = "search_contexts"
INDEXED = "search_layers"
CONTEXT_TEXT = "text"  # the column of ``search_contexts``: the unit's top contexts, one after another
CONTEXT_BREAK = "\n…\n"  # between two contexts of a unit

CREATE = [
    f"""CREATE TABLE IF NOT EXISTS {TOKENS} (token TEXT NOT NULL, unit_id INTEGER NOT NULL, peaks INTEGER NOT NULL,
        promotes BOOLEAN NOT NULL, suppresses BOOLEAN NOT NULL, PRIMARY KEY (token, unit_id)) WITHOUT ROWID""",
    # a token's units in the order search lists them, read from the index without sorting
    f"""CREATE INDEX IF NOT EXISTS ix_{TOKENS}_ranked ON {TOKENS}
        (token, peaks DESC, promotes DESC, suppresses DESC, unit_id)""",
    f"CREATE INDEX IF NOT EXISTS ix_{TOKENS}_unit_id ON {TOKENS} (unit_id)",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {CONTEXTS} USING fts5({CONTEXT_TEXT})",
    f"""CREATE TABLE IF NOT EXISTS {INDEXED} (layer_id INTEGER NOT NULL PRIMARY KEY, version INTEGER NOT NULL,
        digest VARCHAR(64) NOT NULL)""",
]

token_hits = table(TOKENS, column("token"), column("unit_id"), column("peaks"), column("promotes"),
                   column("suppresses"))
indexed_layers = table(INDEXED, column("layer_id"), column("version"), column("digest"))


def token_key(token: str) -> str:
    """How a token is looked up: its text without surrounding whitespace, case folded (`` Return`` -> ``return``).
    Empty for a token of whitespace alone, which is not indexed."""
    return token.strip().casefold()


def has_index(session: Session) -> bool:
    """Whether the index's tables exist: a job of this version has indexed something in the atlas."""
    return session.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"),
                           {"name": INDEXED}).first() is not None


def unindexed_layers(session: Session) -> Select:
    """The layers of language models that the index lacks, or holds by another version of its layout: rows of
    (layer id, layer name, model id, model slug), by model and forward order."""
    query = (select(Layer.id, Layer.name, Model.id.label("model_id"), Model.slug).join(Model, Model.id == Layer.model_id)
             .where(Model.kind == ModelKind.LANGUAGE).order_by(Model.id, Layer.position))
    if not has_index(session):
        return query
    current = select(indexed_layers.c.layer_id).where(indexed_layers.c.version == INDEX_VERSION)
    return query.where(Layer.id.not_in(current))
