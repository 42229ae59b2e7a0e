"""Jinja templates and static files, found through the ``templates`` and ``static`` data packages.

They are namespace packages (no ``__init__``), shipped as package data. ``importlib.resources.files`` returns a
``MultiplexedPath`` for those, which neither Jinja nor ``StaticFiles`` accepts, so we take the directory from the
import spec: the same lookup, editable or installed.
"""

import importlib.util
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"data package {name!r} is not installed (pip install -e . from the repository)")
    return Path(next(iter(spec.submodule_search_locations)))


def percent(value: Any) -> str:
    """0.9375 -> '93.8%'; anything that is not a fraction is shown as is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return f"{value:.1%}"
    return str(value)


templates = Jinja2Templates(directory=package_dir("templates"))
templates.env.filters["percent"] = percent


def render_page(
    request: Request, name: str, page: dict[str, Any], status_code: int = 200, **kwargs: Any
) -> HTMLResponse:
    """Render a page from the same dict its JSON twin returns, advertising the twin in a ``Link`` header."""
    response = templates.TemplateResponse(request, name, {"page": page}, status_code=status_code, **kwargs)
    if "json_url" in page:
        response.headers["Link"] = f'<{page["json_url"]}>; rel="alternate"; type="application/json"'
    return response
