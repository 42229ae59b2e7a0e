"""GET requests against the server's ASGI app inside this process, with no socket and no HTTP client: the static
export reads every page as a browser would get it, on a base install (Starlette's TestClient needs httpx, a test
dependency)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from starlette.types import ASGIApp, Message


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


async def get(app: ASGIApp, url: str) -> Answer:
    """``url`` is a path with an optional query, as a page links it (``/models/m/conv1?page=2``)."""
    path, _, query = url.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "server": ("localhost", 80), "client": ("127.0.0.1", 0), "root_path": "",
             "path": unquote(path), "raw_path": path.encode(), "query_string": query.encode(),
             "headers": [(b"host", b"localhost")]}
    requested = False
    start: Message = {}
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal requested
        if requested:
            return {"type": "http.disconnect"}
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    headers = dict(start.get("headers", []))
    return Answer(start["status"], headers.get(b"content-type", b"").decode("latin-1"), b"".join(chunks))
