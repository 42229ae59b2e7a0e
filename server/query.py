"""Each URL's query string as the page reads it: the cache's key, so unknown parameters cost no page build.

A page depends on its path and on the query parameters its route declares (a layer page's ``page``, ``kind``, ``sort``,
``order``, ``thumbnail``, ``unit``), and on nothing else. ``?x=1``, ``?x=2``, ... would otherwise be as many cache
entries, each built afresh: a random parameter made every request to a large circuit page a 1.5 s build. So before
the cache looks a URL up, its query is cut to the parameters its route reads, each once (its last value, the one
FastAPI reads) in the route's order, and the page is built from that query: what a page shows, links and echoes can
depend on nothing the key leaves out. A path no route serves keeps no query (its 404 says which path).

A layer or unit path whose layer is OpenAI Microscope's name for one of ours also keeps Microscope's technique
parameters (``models.op.technique``, ...), which choose where its redirect leads (``server.microscope``).
"""

from __future__ import annotations

from collections import OrderedDict
from urllib.parse import parse_qsl, urlencode

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from server.microscope import is_microscope_name

MICROSCOPE_SUFFIXES = ("technique", "feature_vis.type")  # what store.microscope.technique reads
REMEMBERED_PATHS = 4096  # paths whose accepted parameters are kept, most recent first


class CanonicalQuery:
    """``canonical(path, query)``: the query string of ``path`` cut to what its route reads."""

    def __init__(self, routes: list[BaseRoute]):
        self.routes = [(route, [field.alias for field in route.dependant.query_params])
                       for route in routes if isinstance(route, APIRoute) and "GET" in (route.methods or ())]
        self.remembered: OrderedDict[str, tuple[list[str], bool]] = OrderedDict()

    def accepted(self, path: str) -> tuple[list[str], bool]:
        """The parameters the route serving ``path`` reads, and whether Microscope's are read too."""
        found = self.remembered.get(path)
        if found is None:
            found = ([], False)
            for route, names in self.routes:
                match = route.path_regex.match(path)
                if match:
                    params = match.groupdict()
                    microscope = "layer" in params and is_microscope_name(params.get("model", ""), params["layer"])
                    found = (names, microscope)
                    break
            self.remembered[path] = found
            if len(self.remembered) > REMEMBERED_PATHS:
                self.remembered.popitem(last=False)
        return found

    def __call__(self, path: str, query: bytes) -> bytes:
        if not query:
            return query
        names, microscope = self.accepted(path)
        if not names and not microscope:
            return b""
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        last = dict(pairs)
        kept = [(name, last[name]) for name in names if name in last]
        if microscope:
            kept += [(key, value) for key, value in pairs if key.endswith(MICROSCOPE_SUFFIXES)]
        return urlencode(kept).encode("latin-1")
