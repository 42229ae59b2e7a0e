"""Server settings, read once from the environment (prefix ``ATLASCOPE_``, e.g. ``ATLASCOPE_ATLAS=./atlas``)."""

from pathlib import Path

from pydantic import PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATLASCOPE_")

    atlas: Path = Path("atlas")  # the atlas directory to serve
    per_page: PositiveInt = 256  # units per page of a layer's grid
