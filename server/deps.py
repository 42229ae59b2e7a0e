"""Request-scoped dependencies: one read-only session per request, and the app's atlas and settings."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from server.settings import Settings
from store import Atlas


def get_atlas(request: Request) -> Atlas:
    return request.app.state.atlas


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(atlas: Annotated[Atlas, Depends(get_atlas)]) -> Iterator[Session]:
    with atlas.sessions() as session:
        yield session


AtlasDep = Annotated[Atlas, Depends(get_atlas)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
