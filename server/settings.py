"""Server settings, read once from the environment (prefix ``ATLASCOPE_``, e.g. ``ATLASCOPE_ATLAS=./atlas``)."""

from pathlib import Path

from pydantic import NonNegativeInt, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATLASCOPE_")

    atlas: Path = Path("atlas")  # the atlas directory to serve
    per_page: PositiveInt = 256  # units per page of a layer's grid
    search_per_page: PositiveInt = 20  # results per page of a search
    cache_mb: NonNegativeInt = 64  # finished responses kept per worker process; 0 keeps none (ETags and 304s stay)
    threads: PositiveInt = 8  # page builds at once per worker: SQLite reads and templates, bound by the GIL anyway
