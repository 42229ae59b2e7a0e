"""The site's routes: each page at ``/path`` (HTML) and ``/path.json`` (its JSON twin), plus assets and health.

The ``.json`` route of a page is registered before its HTML route: a path parameter matches dots, so
``/models/m/conv1.json`` would otherwise reach the HTML route as a layer named ``conv1.json``. Path parameters are
plain strings parsed by the pages, so a bad unit or page is a 404 that says what is wrong, never a 422.
"""

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from sqlalchemy import func, select

from server import pages
from server.deps import AtlasDep, SessionDep, SettingsDep
from server.errors import NotFound
from server.templating import render_page
from server.urls import DEFAULT_KIND
from store import FORMAT_VERSION
from store.schema import Asset, Model

router = APIRouter()


def page(path: str, **kwargs: Any):
    """A read-only route: GET, and HEAD for link checkers and caches (the server sends headers only)."""
    return router.api_route(path, methods=["GET", "HEAD"], **kwargs)


SHA256 = re.compile(r"[0-9a-f]{64}")
IMMUTABLE = "public, max-age=31536000, immutable"  # a blob's URL is its hash: it can never change


@page("/.json", tags=["json"], summary="All models")
def index_json(session: SessionDep) -> dict[str, Any]:
    return pages.index_page(session)


@page("/", response_class=HTMLResponse, tags=["html"])
def index_html(request: Request, session: SessionDep) -> HTMLResponse:
    return render_page(request, "index.html", pages.index_page(session))


@page("/models/{model}.json", tags=["json"], summary="A model card and its layers")
def model_json(model: str, session: SessionDep) -> dict[str, Any]:
    return pages.model_page(session, model)


@page("/models/{model}", response_class=HTMLResponse, tags=["html"])
def model_html(request: Request, model: str, session: SessionDep) -> HTMLResponse:
    return render_page(request, "model.html", pages.model_page(session, model))


@page("/models/{model}/{layer}.json", tags=["json"], summary="One page of a layer's units")
def layer_json(
    model: str, layer: str, session: SessionDep, settings: SettingsDep, page: str = "1", kind: str = DEFAULT_KIND
) -> dict[str, Any]:
    return pages.layer_page(session, model, layer, page, settings.per_page, kind)


@page("/models/{model}/{layer}", response_class=HTMLResponse, tags=["html"])
def layer_html(
    request: Request, model: str, layer: str, session: SessionDep, settings: SettingsDep, page: str = "1",
    kind: str = DEFAULT_KIND,
) -> HTMLResponse:
    page_data = pages.layer_page(session, model, layer, page, settings.per_page, kind)
    return render_page(request, "layer.html", page_data)


@page("/models/{model}/{layer}/{unit}.json", tags=["json"], summary="A unit: images, stats, neighbours")
def unit_json(model: str, layer: str, unit: str, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    return pages.unit_page(session, model, layer, unit, settings.per_page)


@page("/models/{model}/{layer}/{unit}", response_class=HTMLResponse, tags=["html"])
def unit_html(
    request: Request, model: str, layer: str, unit: str, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    return render_page(request, "unit.html", pages.unit_page(session, model, layer, unit, settings.per_page))


def etag_matches(if_none_match: str | None, sha256: str) -> bool:
    tags = [tag.strip().removeprefix("W/") for tag in (if_none_match or "").split(",")]
    return "*" in tags or f'"{sha256}"' in tags


@page("/assets/{name}", tags=["assets"], summary="A blob by sha256, optionally with an extension")
def asset(name: str, request: Request, session: SessionDep, atlas: AtlasDep) -> Response:
    sha256 = name.partition(".")[0]
    row = session.get(Asset, sha256) if SHA256.fullmatch(sha256) else None
    if row is None:
        raise NotFound(f"asset {name!r} not found")
    headers = {"Cache-Control": IMMUTABLE, "ETag": f'"{sha256}"'}
    if etag_matches(request.headers.get("if-none-match"), sha256):
        return Response(status_code=304, headers=headers)
    path = atlas.blob_path(sha256)
    if not path.is_file():
        raise NotFound(f"asset {sha256} is indexed but its blob is missing from the atlas")
    return FileResponse(path, media_type=row.media_type, headers=headers)


@page("/-/health", tags=["meta"], summary="Liveness and what is served")
def health(session: SessionDep) -> dict[str, Any]:
    models = session.scalar(select(func.count()).select_from(Model))
    return {"status": "ok", "models": models, "format_version": FORMAT_VERSION}
