"""Every URL the site links to is built here, so pages, JSON twins and templates agree on one scheme.

A page at ``/path`` has its JSON twin at ``/path.json`` (the index ``/`` at ``/.json``).
"""

import mimetypes
from urllib.parse import quote, urlencode


def json_url(url: str) -> str:
    path, sep, query = url.partition("?")
    return f"{path}.json{sep}{query}"


def model_url(model: str) -> str:
    return f"/models/{quote(model, safe='')}"


def layer_url(model: str, layer: str) -> str:
    return f"{model_url(model)}/{quote(layer, safe='')}"


DEFAULT_KIND = "channel"  # the image kind a layer grid shows unless ?kind= asks for another
DEFAULT_SORT = "index"  # the order of a layer's units unless ?sort= asks for another
# What a vision layer's grid shows for each unit (?thumbnail=): its feature visualisation, or its top dataset example
FEATVIS, EXAMPLE = "featvis", "example"
THUMBNAILS = (FEATVIS, EXAMPLE)


def layer_page_url(model: str, layer: str, page: int, kind: str = DEFAULT_KIND, sort: str = DEFAULT_SORT,
                   order: str | None = None, thumbnail: str = FEATVIS) -> str:
    """A page of a layer's units; defaults are left out (``order=None``: the sort's own), so each page has one URL."""
    query = {key: value for key, value in (("page", page if page > 1 else None),
                                           ("kind", kind if kind != DEFAULT_KIND else None),
                                           ("sort", sort if sort != DEFAULT_SORT else None),
                                           ("order", order),
                                           ("thumbnail", thumbnail if thumbnail != FEATVIS else None))
             if value is not None}
    return layer_url(model, layer) + (f"?{urlencode(query)}" if query else "")


def unit_url(model: str, layer: str, index: int) -> str:
    return f"{layer_url(model, layer)}/{index}"


def circuit_url(model: str, task: str) -> str:
    """A model's circuit for a task. Shares its shape with a unit of a layer named ``circuits``; ``server.routes``
    keeps such a unit's URL (a number) reaching the unit."""
    return f"{model_url(model)}/circuits/{quote(task, safe='')}"


def circuit_graph_url(model: str, task: str) -> str:
    """The circuit as circuit-tracer's graph JSON (a download, with no HTML page and so no ``.json`` twin)."""
    return f"{circuit_url(model, task)}/graph.json"


def tasks_url() -> str:
    return "/circuits"


def task_url(task: str) -> str:
    """Every language model's circuit for one task, side by side."""
    return f"{tasks_url()}/{quote(task, safe='')}"


def search_url(query: str | None = None, page: int = 1) -> str:
    """The search page, with a query and a page of its results; page 1 is left out, so each page has one URL."""
    params = {key: value for key, value in (("q", query), ("page", page if page > 1 else None)) if value is not None}
    return "/search" + (f"?{urlencode(params)}" if params else "")


def asset_url(sha256: str, media_type: str) -> str:
    """Blobs are addressed by hash; the extension only helps people who save the file."""
    return f"/assets/{sha256}{mimetypes.guess_extension(media_type) or ''}"


def links(url: str) -> dict[str, str]:
    """The ``url``/``json_url`` pair every linked thing carries in a JSON twin."""
    return {"url": url, "json_url": json_url(url)}
