"""The FastAPI application serving one atlas directory, read-only."""

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from server import errors
from server.routes import router
from server.settings import Settings
from server.templating import package_dir
from store import Atlas


def create_app(atlas_dir: Path | None = None) -> FastAPI:
    """Open the atlas (``store.AtlasError`` if it is missing or unreadable) and build the app that serves it."""
    settings = Settings() if atlas_dir is None else Settings(atlas=atlas_dir)
    app = FastAPI(title="atlascope", summary="An atlas of what the units of neural networks compute.")
    app.state.settings = settings
    app.state.atlas = Atlas.open_readonly(settings.atlas)
    app.mount("/static", StaticFiles(directory=package_dir("static")), name="static")
    app.include_router(router)
    errors.install(app)
    return app
