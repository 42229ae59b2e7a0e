"""Errors say exactly what is wrong, as JSON to JSON clients and as a styled page to browsers.

- 400: a query value that is not one of those the page knows (``?thumbnail=``), and which ones it knows.
- 404: what was not found (a model, layer, unit, page, image kind or path).
- 503: the atlas cannot answer: its index is damaged (``atlascope verify`` says where), or a writer holds it longer
  than we wait (``Retry-After``). A damaged page also turns ``/-/health`` to 503 for the rest of the process's life.
- 500: a bug of ours, still answered in the client's format rather than as plain text.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException

from server.templating import render_page
from store.errors import BUSY, DAMAGED, classify

RETRY_AFTER_SECONDS = "2"


class NotFound(HTTPException):
    def __init__(self, message: str):
        super().__init__(404, message)


class BadRequest(HTTPException):
    def __init__(self, message: str):
        super().__init__(400, message)


def wants_json(request: Request) -> bool:
    return request.url.path.endswith(".json") or "application/json" in request.headers.get("accept", "")


def error_response(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if wants_json(request):
        return JSONResponse({"error": {"status": status, "message": message}}, status_code=status, headers=headers)
    page = {"status": status, "message": message}
    return render_page(request, "error.html", page, status_code=status, headers=headers)


async def http_error(request: Request, exc: HTTPException) -> Response:
    message = exc.detail
    if exc.status_code == 404 and not isinstance(exc, NotFound):  # the router found no route at all
        path = request.url.path
        message = f"no page at {path if len(path) <= 200 else path[:200] + '…'}"
    return error_response(request, exc.status_code, message, exc.headers)


async def atlas_error(request: Request, exc: DBAPIError) -> Response:
    failure = classify(exc, request.app.state.settings.atlas)
    if failure is None:
        return await internal_error(request, exc)
    if failure.kind == DAMAGED:
        request.app.state.damage = failure.message
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if failure.kind == BUSY else None
    return error_response(request, 503, failure.message, headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    return error_response(request, 500, f"internal error ({type(exc).__name__}); this is a bug in atlascope")


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(DBAPIError, atlas_error)
    app.add_exception_handler(Exception, internal_error)
