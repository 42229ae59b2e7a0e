"""The FastAPI application serving one atlas directory, read-only.

``create_app`` is also uvicorn's factory for ``atlascope serve --workers N``: each worker process opens the atlas,
probes its integrity once, and keeps its own page cache.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from server import errors
from server.cache import PageCache
from server.routes import router
from server.settings import Settings
from server.templating import package_dir
from server.watch import AtlasWatch
from store import Atlas
from store.atlas import DB_NAME
from store.errors import classify


def integrity(atlas: Atlas) -> str:
    """SQLite's quick_check: ``ok`` or its first complaint. It reads every page once, which for an atlas index (a few
    MB per thousand units; blobs live outside it) takes milliseconds, so it runs once per worker at start-up."""
    try:
        with atlas.sessions() as session:
            return session.execute(text("PRAGMA quick_check(1)")).scalar() or "no answer from quick_check"
    except DBAPIError as exc:
        failure = classify(exc, atlas.root)
        return failure.message if failure else str(exc)


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


def create_app(atlas_dir: Path | None = None) -> FastAPI:
    """Open the atlas (``store.AtlasError`` if it is missing or unreadable) and build the app that serves it."""
    settings = Settings() if atlas_dir is None else Settings(atlas=atlas_dir)
    atlas = Atlas.open_readonly(settings.atlas)
    watch = AtlasWatch(atlas.root, atlas.root / DB_NAME)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.executor.shutdown(wait=False, cancel_futures=True)
        app.state.health_executor.shutdown(wait=False, cancel_futures=True)
        watch.close()

    app = FastAPI(title="atlascope", summary="An atlas of what the units of neural networks compute.",
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.atlas = atlas
    app.state.watch = watch
    app.state.integrity = integrity(atlas)
    app.state.damage = None  # set by the first page that finds the index damaged
    app.state.executor = ThreadPoolExecutor(settings.threads, thread_name_prefix="atlascope-page")
    app.state.health_executor = ThreadPoolExecutor(1, thread_name_prefix="atlascope-health")
    app.mount("/static", StaticFiles(directory=package_dir("static")), name="static")
    app.include_router(router)
    errors.install(app)
    app.openapi = lambda: openapi_without_422(app)
    app.add_middleware(PageCache, watch=watch, max_bytes=settings.cache_mb * 2**20)
    return app
