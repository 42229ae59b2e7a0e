"""The site's routes: each page at ``/path`` (HTML) and ``/path.json`` (its JSON twin), plus assets and health.

Handlers are ``async`` and do their SQLite work, validation and template rendering in one call on the app's page
executor, inside one session that is closed before the call returns: no request holds a pooled connection while it
waits for a thread (that was the old stall), and the event loop stays free to answer cache hits and ``/-/health``.
Responses are marked cacheable and reach ``server.cache``, which adds ETags, gzip and 304s.

The ``.json`` route of a page is registered before its HTML route: a path parameter matches dots, so
``/models/m/conv1.json`` would otherwise reach the HTML route as a layer named ``conv1.json``. A model's circuits
(``/models/{model}/circuits/{task}``) are registered before its units, whose URLs have the same shape: there a number,
in a model with a layer named ``circuits``, is that layer's unit, so no unit URL changes meaning. Path parameters are
plain strings parsed by the pages, so a bad unit or page is a 404 that says what is wrong, never a 422; so are the
query parameters, whose values the schema lists (a ``?thumbnail=`` that is neither of its two is a 400: it names no
thing that could be missing). A layer page's ``?unit=N`` (its jump box, a plain form) answers 303 with the unit's
page, and so does a search (``/search?q=``) naming exactly one unit (its twin names the unit in ``jump``). A layer or
unit URL whose layer is OpenAI Microscope's name for one of ours (``mixed4c_0``) answers 301 with
ours, unless the model has a layer of that very name (``server.microscope``). HEAD is answered for every route by
``server.cache``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import func, select

from server.cache import mark_cacheable
from server.circuit_tracer import TracerGraph, tracer_graph
from server.errors import NotFound
from server.microscope import is_microscope_name, moved_to
from server.pages.circuit import circuit_page, has_circuits_layer
from server.pages.common import echo, unit_number
from server.pages.index import index_page
from server.pages.layer import LANGUAGE_SORTS, ORDERS, jump_url, layer_page
from server.pages.model import model_page
from server.pages.search import MAX_QUERY, QUERY_PATTERN, search_jump, search_page
from server.pages.tasks import task_page, tasks_page
from server.pages.unit import unit_page
from server.templating import EMBED_VALUES, embed_flag, render_page
from server.twins import (
    CircuitPage, ErrorBody, Health, IndexPage, LayerPage, ModelPage, SearchPage, TaskPage, TasksPage, Twin, UnitPage,
)
from server.urls import DEFAULT_KIND, DEFAULT_SORT, FEATVIS, THUMBNAILS, asset_url
from store import FORMAT_VERSION
from store.errors import BUSY, INTERRUPTED, classify
from store.schema import Asset, Model

router = APIRouter()

SHA256_CHARS = frozenset("0123456789abcdef")
IMMUTABLE = "public, max-age=31536000, immutable"  # a blob's URL is its hash: it can never change

NOT_MODIFIED = {304: {"description": "Not modified: `If-None-Match` matched the ETag."}}
ERROR_DESCRIPTIONS = {
    404: "Not found: the message says which part of the path. JSON for `.json` paths and `Accept: application/json`, "
         "an HTML page otherwise.",
    503: "The atlas cannot answer: its index is damaged, or a writer holds it (`Retry-After`).",
}
BAD_QUERY = {400: "A `?thumbnail=` that is neither `featvis` nor `example`: the message says so."}


def html_errors(descriptions: dict[int, str]) -> dict[int, dict[str, Any]]:
    return {status: {"description": description, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}},
        "text/html": {"schema": {"type": "string"}},
    }} for status, description in descriptions.items()}


def json_errors(descriptions: dict[int, str]) -> dict[int, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": description} for status, description in descriptions.items()}


ERRORS, JSON_ERRORS = html_errors(ERROR_DESCRIPTIONS), json_errors(ERROR_DESCRIPTIONS)
LAYER_ERRORS = html_errors({**BAD_QUERY, **ERROR_DESCRIPTIONS})
LAYER_JSON_ERRORS = json_errors({**BAD_QUERY, **ERROR_DESCRIPTIONS})
EMBED_ERRORS = html_errors({400: "An `?embed=` other than `1`, `true`, `0` or `false`: the message says so.",
                            **ERROR_DESCRIPTIONS})
PageQuery = Query("1", description="Page of the layer's grid, from 1.")
KindQuery = Query(DEFAULT_KIND, description="Image kind the grid shows: `channel`, `neuron`, ...")
SortQuery = Query(DEFAULT_SORT, description="What the units are sorted by: `index`; for a language model's layer "
                                            "also `density` or `max` (units not measured yet come last).",
                  json_schema_extra={"enum": list(LANGUAGE_SORTS)})
OrderQuery = Query(None, description="`asc` or `desc`; by default ascending for `index`, descending otherwise.",
                   json_schema_extra={"enum": list(ORDERS)})
ThumbnailQuery = Query(FEATVIS, description="What a vision layer's grid shows for each unit: `featvis`, its feature "
                                            "visualisation (of `kind`), or `example`, the crop of its top dataset "
                                            "example. Anything else is a 400.",
                       json_schema_extra={"enum": list(THUMBNAILS)})
UnitQuery = Query(None, description="Jump to a unit: `?unit=5` answers 303 with the unit's page (from the `.json` "
                                    "route, its JSON twin); a unit that does not exist is a 404.")
SEARCH_ERRORS = {400: "A `?q=` with nothing to search for (empty, or only spaces and control characters), or longer "
                      f"than {MAX_QUERY} characters: the message says which.",
                 404: "A `?page=` past the results: the message says how many pages there are.",
                 503: ERROR_DESCRIPTIONS[503]}
SearchQuery = Query(None, description=(
    "What to find: a model, layer or unit by name (`tinylm-sparse 0.mlp.post_act 110`, `mixed4a 12`, "
    "`tinylm-sparse/0.mlp.post_act`), a task, a token (one word, case ignored, punctuation included: `(`, ` return`"
    "), or words in units' top contexts (a phrase). Without it, the page offers the search box."),
    json_schema_extra={"minLength": 1, "maxLength": MAX_QUERY, "pattern": QUERY_PATTERN})
SearchPageQuery = Query("1", description="Page of the results, from 1.")
EmbedQuery = Query(None, description="`1` (or `true`): the page for an iframe, without the site's header, navigation "
                                     "and footer: a unit's contexts or pictures, a circuit's graph. `0` or `false`: "
                                     "the whole page; anything else is a 400.",
                   json_schema_extra={"enum": list(EMBED_VALUES)})
SEARCH_JUMP = {303: {"description": "HTML only: the query names exactly one unit; its page, in `Location`.",
                     "headers": {"Location": {"description": "The unit's URL.", "schema": {"type": "string"}}}}}
JUMP = {303: {"description": "`?unit=N`: see the unit's page, in `Location`.",
              "headers": {"Location": {"description": "The unit's URL.", "schema": {"type": "string"}}}}}
MOVED = {301: {"description": "The layer is named as OpenAI Microscope named it (`mixed4c_0`, "
                              "`conv3_1_conv3_1_0`): the same layer (or unit) under our name, in `Location`, with "
                              "Microscope's technique parameters as the page's section (`#examples`, ...). A model "
                              "or layer the atlas lacks is a 404 naming it.",
               "headers": {"Location": {"description": "Our URL for it.", "schema": {"type": "string"}}}}}


async def in_executor(request: Request, work: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(request.app.state.executor, work)


async def twin_response(request: Request, builder: Callable[..., dict], twin: type[Twin], *args: Any,
                        template: str | None = None, embed: bool | None = None) -> Response:
    """Build a page in the executor, validate it against its twin model, and send it as JSON or render it as HTML
    (``embed``: ``server.templating.render_page``'s)."""
    atlas, writer_active = request.app.state.atlas, request.app.state.watch.writer_active()
    check = request.app.state.check

    def work() -> Response:
        check.run()  # a worker that started on an unreadable index checks it once it can
        with atlas.sessions() as session:
            page = twin.model_validate(builder(session, *args, writer_active=writer_active))
        if template is None:
            return Response(page.model_dump_json(), media_type="application/json")
        return render_page(request, template, page.model_dump(mode="json"), embed=embed)

    response = await in_executor(request, work)
    mark_cacheable(request)
    return response


@router.get("/.json", tags=["json"], summary="All models", response_model=IndexPage,
            responses={**NOT_MODIFIED, **JSON_ERRORS})
async def index_json(request: Request) -> Response:
    return await twin_response(request, index_page, IndexPage)


@router.get("/", response_class=HTMLResponse, tags=["html"], summary="All models",
            responses={**NOT_MODIFIED, **ERRORS})
async def index_html(request: Request) -> Response:
    return await twin_response(request, index_page, IndexPage, template="index.html")


@router.get("/circuits.json", tags=["json"], summary="Tasks that have circuits", response_model=TasksPage,
            responses={**NOT_MODIFIED, **JSON_ERRORS})
async def tasks_json(request: Request) -> Response:
    return await twin_response(request, tasks_page, TasksPage)


@router.get("/circuits", response_class=HTMLResponse, tags=["html"], summary="Tasks that have circuits",
            responses={**NOT_MODIFIED, **ERRORS})
async def tasks_html(request: Request) -> Response:
    return await twin_response(request, tasks_page, TasksPage, template="tasks.html")


@router.get("/circuits/{task}.json", tags=["json"], summary="Every model's circuit for a task, side by side",
            response_model=TaskPage, responses={**NOT_MODIFIED, **JSON_ERRORS})
async def task_json(request: Request, task: str) -> Response:
    return await twin_response(request, task_page, TaskPage, task)


@router.get("/circuits/{task}", response_class=HTMLResponse, tags=["html"],
            summary="Every model's circuit for a task, side by side", responses={**NOT_MODIFIED, **ERRORS})
async def task_html(request: Request, task: str) -> Response:
    return await twin_response(request, task_page, TaskPage, task, template="task.html")


async def search_response(request: Request, q: str | None, page: str, template: str | None = None) -> Response:
    """The search page; as HTML, a query naming exactly one unit answers 303 with the unit's page instead."""
    if template is not None and q is not None:
        atlas = request.app.state.atlas

        def work() -> str | None:
            with atlas.sessions() as session:
                return search_jump(session, q)

        target = await in_executor(request, work)
        if target is not None:
            return RedirectResponse(target, status_code=303)
    settings = request.app.state.settings
    return await twin_response(request, search_page, SearchPage, q, page, settings.search_per_page, settings.atlas,
                               template=template)


SEARCH_SUMMARY = "Search models, layers, units, tasks, tokens and context text"


@router.get("/search.json", tags=["json"], summary=SEARCH_SUMMARY, response_model=SearchPage,
            responses={**NOT_MODIFIED, **json_errors(SEARCH_ERRORS)})
async def search_json(request: Request, q: str | None = SearchQuery, page: str = SearchPageQuery) -> Response:
    """Results in the order of `server/pages/search.py`: what the query names, then names holding it, then units
    from the search index (token hits, then context hits), 20 a page (`ATLASCOPE_SEARCH_PER_PAGE`). `jump` is the unit a
    query names alone."""
    return await search_response(request, q, page)


@router.get("/search", response_class=HTMLResponse, tags=["html"], summary=SEARCH_SUMMARY,
            responses={**SEARCH_JUMP, **NOT_MODIFIED, **html_errors(SEARCH_ERRORS)})
async def search_html(request: Request, q: str | None = SearchQuery, page: str = SearchPageQuery) -> Response:
    return await search_response(request, q, page, template="search.html")


@router.get("/models/{model}.json", tags=["json"], summary="A model card and its layers", response_model=ModelPage,
            responses={**NOT_MODIFIED, **JSON_ERRORS})
async def model_json(request: Request, model: str) -> Response:
    return await twin_response(request, model_page, ModelPage, model)


@router.get("/models/{model}", response_class=HTMLResponse, tags=["html"], summary="A model card and its layers",
            responses={**NOT_MODIFIED, **ERRORS})
async def model_html(request: Request, model: str) -> Response:
    return await twin_response(request, model_page, ModelPage, model, template="model.html")


async def microscope_redirect(request: Request, model: str, op: str, unit: str | None,
                              twin: bool) -> Response | None:
    """A 301 to our URL when ``op`` is Microscope's name for one of our layers (a 404 naming what the atlas lacks),
    or None: serve the path as it is. Only names in Microscope's table reach the database here."""
    if not is_microscope_name(model, op):
        return None
    atlas, query = request.app.state.atlas, dict(request.query_params)

    def work() -> str | None:
        with atlas.sessions() as session:
            return moved_to(session, model, op, unit, query, twin)

    target = await in_executor(request, work)
    if target is None:
        return None
    # revalidated like the pages: where a name leads depends on what the atlas holds
    return RedirectResponse(target, status_code=301, headers={"Cache-Control": "no-cache"})


async def layer_response(request: Request, model: str, layer: str, page: str, kind: str, sort: str,
                         order: str | None, thumbnail: str, unit: str | None,
                         template: str | None = None) -> Response:
    """A page of the layer's units, or with ``?unit=N`` a redirect to that unit (the layer page's jump box); a
    Microscope name for the layer redirects to ours."""
    moved = await microscope_redirect(request, model, layer, None, twin=template is None)
    if moved is not None:
        return moved
    if unit is not None:
        atlas = request.app.state.atlas

        def work() -> str:
            with atlas.sessions() as session:
                return jump_url(session, model, layer, unit, twin=template is None)

        return RedirectResponse(await in_executor(request, work), status_code=303)
    per_page = request.app.state.settings.per_page
    return await twin_response(request, layer_page, LayerPage, model, layer, page, per_page, kind, sort, order,
                               thumbnail, template=template)


@router.get("/models/{model}/{layer}.json", tags=["json"], summary="One page of a layer's units",
            response_model=LayerPage, responses={**MOVED, **JUMP, **NOT_MODIFIED, **LAYER_JSON_ERRORS})
async def layer_json(request: Request, model: str, layer: str, page: str = PageQuery, kind: str = KindQuery,
                     sort: str = SortQuery, order: str | None = OrderQuery, thumbnail: str = ThumbnailQuery,
                     unit: str | None = UnitQuery) -> Response:
    return await layer_response(request, model, layer, page, kind, sort, order, thumbnail, unit)


@router.get("/models/{model}/{layer}", response_class=HTMLResponse, tags=["html"],
            summary="One page of a layer's units", responses={**MOVED, **JUMP, **NOT_MODIFIED, **LAYER_ERRORS})
async def layer_html(request: Request, model: str, layer: str, page: str = PageQuery, kind: str = KindQuery,
                     sort: str = SortQuery, order: str | None = OrderQuery, thumbnail: str = ThumbnailQuery,
                     unit: str | None = UnitQuery) -> Response:
    return await layer_response(request, model, layer, page, kind, sort, order, thumbnail, unit,
                                template="layer.html")


KQuery = Query(None, description="Show the circuit at this k (the first k nodes of the order pruning learned): one of "
                                 "the k's the page offers (`view.choices`), else a 404 naming them; without it, the "
                                 "circuit's own k.")
PinnedQuery = Query(None, description="circuit-tracer's `pinnedIds`: pinned `node_id`s, comma-separated.")
SupernodesQuery = Query(None, description="circuit-tracer's `supernodes`: JSON `[[name, node_id, ...], ...]`.")
ClerpsQuery = Query(None, description="Labels given to nodes: JSON `[[node_id, label], ...]`.")


async def circuit_response(request: Request, model: str, task: str, template: str | None = None,
                           embed: bool | None = None, k: str | None = None) -> Response:
    """A model's circuit for a task, unless ``task`` is a number and the model has a layer named ``circuits``: then
    it is that layer's unit, whose URL this one shadows."""
    if unit_number(task) is not None:
        atlas = request.app.state.atlas

        def shadowed() -> bool:
            with atlas.sessions() as session:
                return has_circuits_layer(session, model)

        if await in_executor(request, shadowed):
            per_page = request.app.state.settings.per_page
            return await twin_response(request, unit_page, UnitPage, model, "circuits", task, per_page,
                                       template="unit.html" if template else None, embed=embed)
    return await twin_response(request, circuit_page, CircuitPage, model, task, k, template=template, embed=embed)


CIRCUIT_SUMMARY = "A task circuit of a language model: its graph, loss curve, faithfulness and examples"


@router.get("/models/{model}/circuits/{task}/graph.json", tags=["json"],
            summary="A task circuit as circuit-tracer's graph JSON", response_model=TracerGraph,
            responses={**NOT_MODIFIED, **json_errors({400: "A `supernodes` or `clerps` that is not the JSON list its "
                                                           "description shows: the message says which.",
                                                      **ERROR_DESCRIPTIONS})})
async def circuit_graph_json(request: Request, model: str, task: str, k: str | None = KQuery,
                             pinnedIds: str | None = PinnedQuery, supernodes: str | None = SupernodesQuery,  # noqa: N803
                             clerps: str | None = ClerpsQuery) -> Response:
    """The format of github safety-research/circuit-tracer, which Neuronpedia's graph viewer reads; see
    `server/circuit_tracer.py` for how a pruned circuit maps onto it. The circuit page's view (its `k`, pins,
    groups and labels) carries over as the same query parameters."""
    atlas = request.app.state.atlas

    def work() -> Response:
        with atlas.sessions() as session:
            graph = TracerGraph.model_validate(tracer_graph(session, model, task, k, (pinnedIds, supernodes, clerps)))
        return Response(graph.model_dump_json(), media_type="application/json")

    response = await in_executor(request, work)
    mark_cacheable(request)
    return response


@router.get("/models/{model}/circuits/{task}.json", tags=["json"], summary=CIRCUIT_SUMMARY,
            response_model=CircuitPage, responses={**NOT_MODIFIED, **JSON_ERRORS})
async def circuit_json(request: Request, model: str, task: str, k: str | None = KQuery) -> Response:
    """In a model with a layer named `circuits`, a number here is that layer's unit (its twin)."""
    return await circuit_response(request, model, task, k=k)


@router.get("/models/{model}/circuits/{task}", response_class=HTMLResponse, tags=["html"], summary=CIRCUIT_SUMMARY,
            responses={**NOT_MODIFIED, **EMBED_ERRORS})
async def circuit_html(request: Request, model: str, task: str, embed: str | None = EmbedQuery,
                       k: str | None = KQuery) -> Response:
    """In a model with a layer named `circuits`, a number here is that layer's unit."""
    return await circuit_response(request, model, task, template="circuit.html", embed=embed_flag(embed), k=k)


@router.get("/models/{model}/{layer}/{unit}.json", tags=["json"], summary="A unit: images, stats, neighbours",
            response_model=UnitPage, responses={**MOVED, **NOT_MODIFIED, **JSON_ERRORS})
async def unit_json(request: Request, model: str, layer: str, unit: str) -> Response:
    moved = await microscope_redirect(request, model, layer, unit, twin=True)
    if moved is not None:
        return moved
    per_page = request.app.state.settings.per_page
    return await twin_response(request, unit_page, UnitPage, model, layer, unit, per_page)


@router.get("/models/{model}/{layer}/{unit}", response_class=HTMLResponse, tags=["html"],
            summary="A unit: images, stats, neighbours", responses={**MOVED, **NOT_MODIFIED, **EMBED_ERRORS})
async def unit_html(request: Request, model: str, layer: str, unit: str, embed: str | None = EmbedQuery) -> Response:
    moved = await microscope_redirect(request, model, layer, unit, twin=False)
    if moved is not None:
        return moved
    per_page = request.app.state.settings.per_page
    return await twin_response(request, unit_page, UnitPage, model, layer, unit, per_page, template="unit.html",
                               embed=embed_flag(embed))


@router.get("/assets/{name}", tags=["assets"], summary="A blob by sha256, optionally with an extension",
            response_class=Response, responses={
                200: {"content": {"image/png": {}, "application/json": {}}, "description": "The blob's bytes."},
                **NOT_MODIFIED, **ERRORS})
async def asset(request: Request, name: str) -> Response:
    """The blob at its hash, bare or with its media type's extension (``server.urls.asset_url``); another extension
    is a 404 naming the right URL, so each blob has the URLs its pages link to and no others."""
    sha256 = name.partition(".")[0]
    if len(sha256) != 64 or not SHA256_CHARS.issuperset(sha256):
        raise NotFound(f"asset {echo(name)} not found")
    atlas = request.app.state.atlas

    def work() -> Response:
        with atlas.sessions() as session:
            row = session.get(Asset, sha256)
        if row is None:
            raise NotFound(f"asset {echo(name)} not found")
        if name != sha256 and f"/assets/{name}" != (url := asset_url(sha256, row.media_type)):
            raise NotFound(f"asset {echo(name)} not found: blob {sha256} is {row.media_type}, at {url}")
        try:
            body = atlas.blob_path(sha256).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"asset {sha256} is indexed but its blob is missing from the atlas") from None
        return Response(body, media_type=row.media_type, headers={"Cache-Control": IMMUTABLE, "ETag": f'"{sha256}"'})

    response = await in_executor(request, work)
    mark_cacheable(request)
    return response


@router.get("/-/health", tags=["meta"], summary="Whether the atlas can be served, and what is served",
            response_model=Health,
            responses={503: {"model": Health, "description": "The atlas is damaged, busy, or was left mid-commit."}})
async def health(request: Request) -> Response:
    """Never cached, and run on its own thread so that a queue of page builds cannot delay it."""
    state = request.app.state

    def work() -> JSONResponse:
        check = state.check
        check.run()
        body = {"format_version": FORMAT_VERSION, "generation": state.watch.change_counter(),
                "writer_active": state.watch.writer_active(), "models": None, "status": "ok", "message": None,
                "integrity": check.integrity or "not checked yet: the index has not been readable since start-up"}
        try:
            with state.atlas.sessions() as session:
                body["models"] = session.scalar(select(func.count()).select_from(Model))
        except Exception as exc:  # noqa: BLE001 - whatever SQLite says, health reports it rather than failing
            failure = classify(exc, state.settings.atlas)
            if failure is None:
                raise
            status = failure.kind if failure.kind in (BUSY, INTERRUPTED) else "damaged"
            body["status"], body["message"] = status, failure.message
        if body["status"] == "ok" and (state.damage or check.problem):
            body["status"], body["message"] = "damaged", state.damage or check.problem
        return JSONResponse(Health(**body).model_dump(mode="json"), status_code=200 if body["status"] == "ok" else 503)

    return await asyncio.get_running_loop().run_in_executor(state.health_executor, work)
