"""Jinja templates and static files, found through the ``templates`` and ``static`` data packages.

They are namespace packages (no ``__init__``), shipped as package data. ``importlib.resources.files`` returns a
``MultiplexedPath`` for those, which neither Jinja nor ``StaticFiles`` accepts, so we take the directory from the
import spec: the same lookup, editable or installed.
"""

import importlib.util
import math
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from store.keys import CardKey, EdgeKind, ExampleKind, ModelKind


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"data package {name!r} is not installed (pip install -e . from the repository)")
    return Path(next(iter(spec.submodule_search_locations)))


def percent(value: Any, digits: int = 1) -> str:
    """0.9375 -> '93.8%'; anything that is not a fraction is shown as is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
        return f"{value:.{digits}%}"
    return str(value)


def duration(seconds: Any) -> str:
    """754.2 -> '12 min 34 s', 5400 -> '1 h 30 min': how long training took, to the precision a reader cares for."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        return str(seconds)
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


VISIBLE = str.maketrans({" ": "·", "\n": "⏎", "\t": "→", "\r": "␍"})


def visible(token: str) -> str:
    """A token alone, with its whitespace made visible: ' return' -> '·return', '\\n' -> '⏎'."""
    return token.translate(VISIBLE)


def source_text(token: str) -> Markup:
    """A token inside a block of code: its text as is, with an empty ``nl`` marker before each newline, which CSS
    draws as ⏎ so a newline token can be seen (and shaded); the marker is not text, so copying gives the source."""
    return Markup('<i class="nl"></i>\n').join(escape(line) for line in token.split("\n"))


templates = Jinja2Templates(directory=package_dir("templates"))
templates.env.filters.update(percent=percent, duration=duration, visible=visible, source_text=source_text,
                             log10=math.log10)  # log10: the circuit page's loss-vs-k chart has a log axis
templates.env.globals["CardKey"] = CardKey  # language-model card sections, by the names the job writes them under
templates.env.globals.update(ModelKind=ModelKind, ExampleKind=ExampleKind, EdgeKind=EdgeKind)


def render_page(
    request: Request, name: str, page: dict[str, Any], status_code: int = 200, **kwargs: Any
) -> HTMLResponse:
    """Render a page from the same dict its JSON twin returns, advertising the twin in a ``Link`` header."""
    response = templates.TemplateResponse(request, name, {"page": page}, status_code=status_code, **kwargs)
    if "json_url" in page:
        response.headers["Link"] = f'<{page["json_url"]}>; rel="alternate"; type="application/json"'
    return response
