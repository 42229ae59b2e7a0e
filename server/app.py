"""The FastAPI application serving one atlas directory, read-only.

``create_app`` is also uvicorn's factory for ``atlascope serve --workers N``: each worker process opens the atlas,
checks it once it can read it (``IndexCheck``), and keeps its own page cache.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from server import errors
from server.cache import PageCache
from server.query import CanonicalQuery
from server.routes import router
from server.settings import Settings
from server.templating import package_dir
from server.watch import AtlasWatch
from store import Atlas
from store.atlas import DB_NAME
from store.errors import BUSY, DAMAGED, INTERRUPTED, AtlasError, AtlasUnreadable, Failure, classify, describe


class IndexCheck:
    """What a worker checks of the index before serving: an atlas's, of this format (``Atlas.check_readable``), and
    intact by SQLite's quick_check, which reads every page once (milliseconds for an atlas index: blobs live outside
    it).

    A worker that starts while a writer holds the index (busy) or after one was killed mid-commit (interrupted) cannot
    read it yet. It starts all the same and answers as a running worker would (pages 503, with ``Retry-After`` while
    busy); the checks run again with the next page or health probe until they get an answer. An index SQLite cannot
    read at all is damaged: served as far as it is readable, which may be nothing, with 503s saying so. Someone
    else's database, or an atlas of another format version, is refused at start-up (``store.AtlasError``)."""

    def __init__(self, atlas: Atlas):
        self.atlas = atlas
        self.integrity: str | None = None  # "ok", or what is wrong with the index; None until the checks could run
        self.problem: str | None = None  # what is wrong, as one sentence, when integrity is not "ok"
        self.pending: Failure | None = None  # why the checks have not run yet (busy, interrupted)
        self._lock = threading.Lock()
        self.run(at_start=True)

    def run(self, at_start: bool = False) -> None:
        """Run the checks unless they are done, or running on another thread (then this one does not wait)."""
        if self.integrity is not None or not self._lock.acquire(blocking=False):
            return
        try:
            self.atlas.check_readable()
            with self.atlas.sessions() as session:
                found = session.execute(text("PRAGMA quick_check(1)")).scalar() or "no answer from quick_check"
            self.integrity, self.pending = found, None
            self.problem = None if found == "ok" else describe(DAMAGED, self.atlas.db_path, found)
        except AtlasUnreadable as exc:
            self._unreadable(exc.failure)
        except DBAPIError as exc:
            failure = classify(exc, self.atlas.root)
            if failure is None:
                raise
            self._unreadable(failure)
        except AtlasError as exc:  # a foreign database, another format version
            if at_start:
                raise
            self.integrity = self.problem = str(exc)
            self.pending = None
        finally:
            self._lock.release()

    def _unreadable(self, failure: Failure) -> None:
        if failure.kind in (BUSY, INTERRUPTED):
            self.pending = failure
        else:
            self.integrity = self.problem = failure.message
            self.pending = None


def openapi_without_422(app: FastAPI) -> dict:
    """FastAPI documents a 422 for every route with parameters, but ours are plain strings that cannot fail
    validation: a bad model, layer, unit or page is a 404 with a message. Leave the 422 out so the schema says what
    the routes do."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        for path in schema["paths"].values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


SWAGGER_UI = "/static/vendor/swagger-ui"  # Swagger UI's files, as npm ships them (static/vendor/README.md)


def swagger_ui(app: FastAPI) -> HTMLResponse:
    """``/docs``: Swagger UI from our own static files rather than FastAPI's default CDN, so the API's documentation
    works offline, as every other page does."""
    return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - Swagger UI",
                               swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
                               swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
                               swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png")


def create_app(atlas_dir: Path | None = None) -> FastAPI:
    """Open the atlas and build the app that serves it: ``store.AtlasError`` if there is none, or it is someone else's
    database or an atlas of another format version. A busy, interrupted or damaged index is served (``IndexCheck``)."""
    settings = Settings() if atlas_dir is None else Settings(atlas=atlas_dir)
    atlas = Atlas.open_unchecked(settings.atlas)
    check = IndexCheck(atlas)
    watch = AtlasWatch(atlas.root, atlas.root / DB_NAME)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.executor.shutdown(wait=False, cancel_futures=True)
        app.state.health_executor.shutdown(wait=False, cancel_futures=True)
        watch.close()

    # FastAPI's own /docs and /redoc load their scripts from CDNs: /docs is served from static files instead
    app = FastAPI(title="atlascope", summary="An atlas of what the units of neural networks compute.",
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.atlas = atlas
    app.state.watch = watch
    app.state.check = check
    app.state.damage = None  # set by the first page that finds the index damaged
    app.state.executor = ThreadPoolExecutor(settings.threads, thread_name_prefix="atlascope-page")
    app.state.health_executor = ThreadPoolExecutor(1, thread_name_prefix="atlascope-health")
    app.mount("/static", StaticFiles(directory=package_dir("static")), name="static")
    app.include_router(router)
    app.add_api_route("/docs", lambda: swagger_ui(app), include_in_schema=False)
    errors.install(app)
    app.openapi = lambda: openapi_without_422(app)
    app.add_middleware(PageCache, watch=watch, max_bytes=settings.cache_mb * 2**20,
                       canonical_query=CanonicalQuery(router.routes))
    return app
