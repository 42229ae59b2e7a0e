"""``/search?q=``: models, layers, units and task circuits by name, and language-model units by token or by text in
their top contexts.

Results come in this order, one list paged as a whole:

1. what the query names exactly: ``MODEL LAYER UNIT`` or ``LAYER UNIT`` a unit, ``MODEL LAYER`` a layer, ``MODEL`` or
   ``LAYER`` a model or layers (words split at spaces or ``/``, case ignored). A query naming exactly one unit is a
   jump, which the HTML page answers with a redirect to it;
2. tasks, models and layers whose names hold the query;
3. from the search index (``store.search``, built by the job): when the query is one word, the units it names a
   token of, those with the most top contexts peaking on it first, then those whose logit effects promote it, then
   suppress it (an exact lookup, punctuation included, case folded); then the units whose top contexts hold the
   query as a phrase (FTS5), ranked by bm25.

The query reaches FTS5 only as one quoted phrase (``phrase``), so none of its characters is FTS5 syntax, and a query
no index row can match finds nothing rather than failing. Ranking by bm25 costs time in the number of matches, so
words more than ``RANKED_AT_MOST`` units' contexts hold (``self``, ``the``) are listed in atlas order, which costs
nothing: every query answers in milliseconds.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from pathlib import Path
from typing import Any

from sqlalchemy import Row, bindparam, func, or_, select, text
from sqlalchemy.orm import Session, defer

from server.errors import BadRequest
from server.pages.common import layer_ref, model_ref, parse_page, unit_number, unit_ref
from server.urls import circuit_url, links, search_url, task_url
from store.keys import Stat
from store.schema import Circuit, Layer, Model, Unit
from store.search import CONTEXTS, TOKENS, has_index, token_hits, token_key, unindexed_layers

MAX_QUERY = 200  # characters
# What a query must hold: a character that is neither whitespace nor a control character (both read as spaces)
QUERY_PATTERN = r"[^\s\x00-\x1f\x7f-\x9f]"
RANKED_AT_MOST = 2000  # context hits ranked by bm25; more are listed in atlas order
NAMES_FROM = 2  # characters a query needs before names holding it are listed: one letter is in most names
SNIPPET_TOKENS = 16
MARK, END = "\x02", "\x03"  # around a match in FTS5's snippet() and highlight(): control characters, rare in text
WORD_BREAKS = re.compile(r"[\s/]+")
MARKED = re.compile(f"{MARK}(.*?){END}", re.S)
NO_CARD = defer(Model.card)  # no hit shows a model's card, the biggest JSON there is to decode
EMPTY = ("empty search: give a model, layer or unit (tinylm-sparse 0.mlp.post_act 110, mixed4a 12), a task, a "
         "token, or words from units' top contexts")

SNIPPET = f"snippet({CONTEXTS}, 0, '{MARK}', '{END}', '…', {SNIPPET_TOKENS})"  # the best-matching stretch of contexts


def read_query(raw: str) -> str:
    """The query as searched: control characters and runs of whitespace made single spaces, ends stripped. A 400
    when nothing is left or the query is longer than ``MAX_QUERY``."""
    if len(raw) > MAX_QUERY:
        raise BadRequest(f"search of {len(raw):,} characters: a query has at most {MAX_QUERY}")
    query = " ".join("".join(" " if unicodedata.category(char) == "Cc" else char for char in raw).split())
    if not query:
        raise BadRequest(EMPTY)
    return query


def phrase(query: str) -> str:
    """The query as one FTS5 phrase: quoted, its own quotes doubled, so FTS5 reads no operator, column filter,
    prefix or parenthesis in it; each table's tokenizer splits it into words as it split the indexed text."""
    return '"' + query.replace('"', '""') + '"'


def unit_rows(session: Session, *where: Any) -> list[Row]:
    """(unit id, index, layer name, model, top tokens as JSON) of the units ``where`` selects, by model title."""
    return list(session.execute(
        select(Unit.id, Unit.index, Layer.name, Model, func.json_extract(Unit.stats, f"$.{Stat.TOP_TOKENS}"))
        .join(Layer, Layer.id == Unit.layer_id).join(Model, Model.id == Layer.model_id)
        .where(*where).options(NO_CARD).order_by(Model.title)))


def named_units(session: Session, words: list[str]) -> list[Row]:
    """The units ``MODEL LAYER UNIT`` or ``LAYER UNIT`` names (``unit_rows``), in every model with such a layer."""
    if len(words) not in (2, 3) or (index := unit_number(words[-1])) is None:
        return []
    layers = layers_named(session, words[-2], words[0] if len(words) == 3 else None)
    return unit_rows(session, Unit.layer_id.in_([layer.id for layer, _ in layers]), Unit.index == index)


def layers_named(session: Session, name: str, model: str | None = None) -> list[tuple[Layer, Model]]:
    query = (select(Layer, Model).join(Model, Model.id == Layer.model_id)
             .where(func.lower(Layer.name) == name.lower()).options(NO_CARD).order_by(Model.title))
    if model is not None:
        query = query.where(func.lower(Model.slug) == model.lower())
    return list(session.execute(query))


def models_named(session: Session, slug: str) -> list[Model]:
    return list(session.scalars(select(Model).where(func.lower(Model.slug) == slug.lower()).options(NO_CARD)))


def named(session: Session, query: str) -> tuple[list[dict[str, Any]], list[Row]]:
    """What the query names exactly: model and layer hits, and the units it names (``unit_rows``)."""
    words = [word for word in WORD_BREAKS.split(query) if word]
    hits: list[dict[str, Any]] = []
    if len(words) == 1:
        hits += [model_hit(model) for model in models_named(session, words[0])]
        hits += [layer_hit(model, layer) for layer, model in layers_named(session, words[0])]
    if len(words) == 2:
        hits += [layer_hit(model, layer) for layer, model in layers_named(session, words[1], words[0])]
    return hits, named_units(session, words)


def search_jump(session: Session, raw: str) -> str | None:
    """The URL of the unit the query names, when it names exactly one."""
    _, units = named(session, read_query(raw))
    return unit_ref_of(units[0])["url"] if len(units) == 1 else None


def model_hit(model: Model) -> dict[str, Any]:
    ref = model_ref(model)
    return {"kind": "model", "model": ref, **links(ref["url"])}


def layer_hit(model: Model, layer: Layer) -> dict[str, Any]:
    ref = layer_ref(model, layer)
    return {"kind": "layer", "model": model_ref(model), "layer": ref, **links(ref["url"])}


def unit_ref_of(row: Row) -> dict[str, Any]:
    """``unit_ref`` of a ``unit_rows`` row."""
    _, index, layer, model, _ = row
    return unit_ref(model.slug, layer, index)


def unit_hit(row: Row, peaks: int = 0, promotes: bool = False, suppresses: bool = False,
             snippet: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A unit among the results, from its ``unit_rows`` row and what the index found of it."""
    *_, model, top_tokens = row
    ref = unit_ref_of(row)
    return {"kind": "unit", "model": model_ref(model), "unit": ref, "peaks": peaks, "promotes": promotes,
            "suppresses": suppresses, "snippet": snippet or [], "top_tokens": json.loads(top_tokens or "[]"),
            **links(ref["url"])}


def names_holding(session: Session, query: str) -> list[dict[str, Any]]:
    """Tasks (spaces read as ``_``), models and layers whose names hold the query, case ignored."""
    if len(query) < NAMES_FROM:
        return []
    underscored = query.replace(" ", "_")
    tasks: dict[str, dict[str, Any]] = {}
    for slug, name, model in session.execute(
            select(Circuit.slug, Circuit.task, Model).join(Model, Model.id == Circuit.model_id)
            .where(or_(Circuit.slug.contains(underscored, autoescape=True),
                       Circuit.task.contains(query, autoescape=True)))
            .options(NO_CARD).order_by(Circuit.slug, Model.title)):
        task = tasks.setdefault(slug, {"kind": "task", "slug": slug, "task": name, "circuits": [],
                                       **links(task_url(slug))})
        task["circuits"].append({"model": model_ref(model), **links(circuit_url(model.slug, slug))})
    models = session.scalars(select(Model).where(or_(Model.slug.contains(query, autoescape=True),
                                                     Model.title.contains(query, autoescape=True)))
                             .options(NO_CARD).order_by(Model.title))
    layers = session.execute(select(Layer, Model).join(Model, Model.id == Layer.model_id)
                             .where(Layer.name.contains(query, autoescape=True))
                             .options(NO_CARD).order_by(Model.title, Layer.position))
    return [*tasks.values(), *map(model_hit, models), *(layer_hit(model, layer) for layer, model in layers)]


def snippet_fragments(marked: str) -> list[dict[str, Any]]:
    """FTS5's snippet (matches between ``MARK`` and ``END``) as fragments, each run of whitespace one space."""
    pieces, at = [], 0
    for match in MARKED.finditer(marked):
        pieces += [(marked[at:match.start()], False), (match.group(1), True)]
        at = match.end()
    pieces.append((marked[at:], False))
    return [{"text": re.sub(r"\s+", " ", piece), "match": match} for piece, match in pieces if piece]


class IndexSearch:
    """The query's hits in the search index, counted when made; ``page`` gives any window of them."""

    def __init__(self, session: Session, query: str):
        self.session = session
        indexed = has_index(session)
        # a token is one word: a query with spaces is a phrase only
        self.token = token_key(query) if indexed and not any(char.isspace() for char in query) else None
        self.params = {"phrase": phrase(query), "token": self.token}
        self.tokens = session.execute(select(func.count()).select_from(token_hits)
                                      .where(token_hits.c.token == self.token)).scalar_one() if self.token else 0
        self.contexts = session.execute(text(f"SELECT count(*) FROM {CONTEXTS} WHERE {CONTEXTS} MATCH :phrase"
                                             + self._not_tokens), self.params).scalar_one() if indexed else 0

    @property
    def _not_tokens(self) -> str:
        """Context hits leave out the token hits, which came first."""
        return f" AND rowid NOT IN (SELECT unit_id FROM {TOKENS} WHERE token = :token)" if self.token else ""

    @property
    def total(self) -> int:
        return self.tokens + self.contexts

    @property
    def ranked(self) -> bool:
        """Whether the context hits are ranked by relevance (few enough to rank)."""
        return self.contexts <= RANKED_AT_MOST

    def page(self, offset: int, limit: int) -> list[dict[str, Any]]:
        """Hits ``offset`` to ``offset + limit`` of the token hits (most top contexts peaking on the token first,
        then promoting it, then suppressing it) followed by the context hits, each with its snippet. A few
        statements per page whatever its length: FTS5 computes snippets only for the rows a statement returns."""
        evidence: dict[int, tuple[int, bool, bool]] = {}  # unit id -> (peaks, promotes, suppresses)
        if offset < self.tokens:
            evidence.update((unit_id, (peaks, bool(promotes), bool(suppresses)))
                            for unit_id, peaks, promotes, suppresses in self.session.execute(
                select(token_hits.c.unit_id, token_hits.c.peaks, token_hits.c.promotes, token_hits.c.suppresses)
                .where(token_hits.c.token == self.token)
                .order_by(token_hits.c.peaks.desc(), token_hits.c.promotes.desc(), token_hits.c.suppresses.desc(),
                          token_hits.c.unit_id).limit(limit).offset(offset)))
        snippets = dict(self.session.execute(
            text(f"SELECT rowid, {SNIPPET} FROM {CONTEXTS} WHERE {CONTEXTS} MATCH :phrase AND rowid IN :ids")
            .bindparams(bindparam("ids", expanding=True)), {**self.params, "ids": list(evidence)}).all()
            if evidence else [])
        if len(evidence) < limit:
            order = "rank, rowid" if self.ranked else "rowid"
            for unit_id, snippet in self.session.execute(
                    text(f"SELECT rowid, {SNIPPET} FROM {CONTEXTS} WHERE {CONTEXTS} MATCH :phrase{self._not_tokens} "
                         f"ORDER BY {order} LIMIT :limit OFFSET :offset"),
                    {**self.params, "limit": limit - len(evidence), "offset": max(0, offset - self.tokens)}):
                evidence[unit_id], snippets[unit_id] = (0, False, False), snippet
        rows = {row[0]: row for row in unit_rows(self.session, Unit.id.in_(evidence))}
        return [unit_hit(rows[unit_id], *found, snippet=snippet_fragments(snippets.get(unit_id, "")))
                for unit_id, found in evidence.items() if unit_id in rows]


def index_state(session: Session, atlas: Path, writer_active: bool) -> dict[str, Any]:
    """Which language models the index lacks, and how to build it."""
    missing = {model.id: model for model in session.scalars(
        select(Model).where(Model.id.in_(unindexed_layers(session).with_only_columns(Model.id)))
        .options(NO_CARD).order_by(Model.id))}
    if not missing:
        return {"complete": True, "missing": [], "message": None}
    writing = (" A precompute is writing to this atlas now: its `search index` stage indexes what it wrote."
               if writer_active else "")
    return {"complete": False, "missing": [model_ref(model) for model in missing.values()],
            "message": f"The search index lacks {', '.join(model.slug for model in missing.values())}: their units "
                       f"are found by name only until `atlascope index --atlas {atlas}` builds it "
                       f"(as every `atlascope precompute` into this atlas does at its end).{writing}"}


def search_page(session: Session, raw: str | None, raw_page: str, per_page: int, atlas: Path,
                writer_active: bool) -> dict[str, Any]:
    """The page of results; without a query (``raw`` None), the bare search page."""
    query = None if raw is None else read_query(raw)
    hits: list[dict[str, Any]] = []
    jump, found = None, None
    if query is not None:
        hits, units = named(session, query)
        jump = unit_ref_of(units[0]) if len(units) == 1 else None
        hits += [unit_hit(row) for row in units]
        seen = {hit["url"] for hit in hits}
        hits += [hit for hit in names_holding(session, query) if hit["url"] not in seen]
        found = IndexSearch(session, query)
    total = len(hits) + (found.total if found else 0)
    pages = max(1, math.ceil(total / per_page))
    number = parse_page(raw_page, pages)
    start = (number - 1) * per_page
    shown = hits[start:start + per_page]
    if found is not None and len(shown) < per_page and found.total:
        shown += found.page(max(0, start - len(hits)), per_page - len(shown))

    def page_link(n: int) -> dict[str, Any]:
        return {"page": n, **links(search_url(query, n))}

    return {
        **links(search_url(query, number)),
        "query": query,
        "jump": jump,
        "ranked": found is None or found.ranked,
        "ranked_at_most": RANKED_AT_MOST,
        "results": shown,
        "page": {"page": number, "per_page": per_page, "pages": pages, "total": total,
                 "prev": page_link(number - 1) if number > 1 else None,
                 "next": page_link(number + 1) if number < pages else None},
        "index": index_state(session, atlas, writer_active),
    }
