"""The baseline of ``bench/serve_load.py``: about the least a FastAPI app can do to answer with one row of an atlas's
``units`` table as JSON. One sync route, the stdlib ``sqlite3`` module, the database opened read-only. atlascope's
unit pages do more per request (several tables, a template, caching), so their speed over this one's says how close
they come to what the framework and the machine allow, measured in the same run on the same atlas.

    BARE_ATLAS_DB=atlas/atlas.db .venv/bin/python -m uvicorn --app-dir bench bare_route:app --workers 2
"""

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException

DB_URI = Path(os.environ["BARE_ATLAS_DB"]).resolve().as_uri() + "?mode=ro"
app = FastAPI(title="bare FastAPI + SQLite one-row route")
local = threading.local()


def connection() -> sqlite3.Connection:
    """One connection per threadpool thread, kept: sqlite3 connections must not cross threads, and opening one per
    request would measure SQLite's open, not the route."""
    if not hasattr(local, "db"):
        local.db = sqlite3.connect(DB_URI, uri=True)
        local.db.row_factory = sqlite3.Row
    return local.db


@app.get("/units/{unit_id}")
def unit(unit_id: int) -> dict[str, Any]:
    row = connection().execute("SELECT * FROM units WHERE id = ?", (unit_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"unit {unit_id} not found")
    return dict(row)
