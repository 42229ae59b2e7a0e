"""Errors say exactly what was not found, as JSON to JSON clients and as a styled page to browsers."""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from server.templating import render_page


class NotFound(HTTPException):
    def __init__(self, message: str):
        super().__init__(404, message)


def wants_json(request: Request) -> bool:
    return request.url.path.endswith(".json") or "application/json" in request.headers.get("accept", "")


async def http_error(request: Request, exc: HTTPException) -> Response:
    message = exc.detail
    if exc.status_code == 404 and not isinstance(exc, NotFound):  # the router found no route at all
        message = f"no page at {request.url.path}"
    if wants_json(request):
        body = {"error": {"status": exc.status_code, "message": message}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
    page = {"status": exc.status_code, "message": message}
    return render_page(request, "error.html", page, status_code=exc.status_code, headers=exc.headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, http_error)
