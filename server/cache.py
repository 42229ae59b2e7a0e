"""Conditional, compressed and cached responses, as one ASGI layer in front of the app.

Work done for one request serves every later one until the atlas changes (``server.watch``): a route marks its
response cacheable (``mark_cacheable``), and this layer keeps the finished bytes, an ETag (the route's own, or a hash of
the body) and, for text, a gzipped copy. A hit is answered here without routing, threads or SQLite. The same layer
answers ``If-None-Match`` with 304 and serves HEAD as GET without a body, for cached and uncached responses alike;
``max_bytes=0`` keeps all of that and only stops storing. The key is the path and the query cut to what the page
reads (``server.query``), and the page is built from that same query, so an unknown parameter costs no build.

One worker process owns one cache; it lives on the event loop's thread, so it needs no lock.
"""

from __future__ import annotations

import gzip
import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.watch import AtlasWatch

GZIP_MIN_BYTES = 1024  # smaller bodies are not worth a Content-Encoding
COMPRESSIBLE = (b"text/", b"application/json")
PAGE_CACHE_CONTROL = b"no-cache"  # pages may change with the next job commit: revalidate (cheaply, by ETag)
DROPPED = {b"content-length", b"content-encoding", b"etag", b"vary"}  # set by this layer for each variant


def mark_cacheable(request: Request) -> None:
    """Let the cache keep this response: its bytes depend only on the URL and the atlas's contents."""
    request.state.cacheable = True


@dataclass(frozen=True)
class Entry:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: bytes
    gzipped: bytes | None

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped or b"")

    @classmethod
    def build(cls, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Entry:
        named = dict(headers)
        etag = named.get(b"etag") or b'"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"'
        kept = [(k, v) for k, v in headers if k not in DROPPED]
        if b"cache-control" not in named:
            kept.append((b"cache-control", PAGE_CACHE_CONTROL))
        compressible = named.get(b"content-type", b"").startswith(COMPRESSIBLE) and len(body) >= GZIP_MIN_BYTES
        return cls(status, kept, body, etag, gzip.compress(body, compresslevel=6, mtime=0) if compressible else None)


def header(scope: Scope, name: bytes) -> bytes:
    return b",".join(value for key, value in scope["headers"] if key == name)


def accepts_gzip(scope: Scope) -> bool:
    for coding in header(scope, b"accept-encoding").lower().split(b","):
        name, _, params = coding.strip().partition(b";")
        if name.strip() in (b"gzip", b"*"):
            return params.replace(b" ", b"") not in (b"q=0", b"q=0.0", b"q=0.00", b"q=0.000")
    return False


def etag_matches(if_none_match: bytes, etag: bytes) -> bool:
    """Weak comparison, as RFC 9110 asks for If-None-Match; a gzipped variant matches its identity ETag."""
    base = etag.strip(b'"')
    for tag in if_none_match.split(b","):
        tag = tag.strip().removeprefix(b"W/").strip(b'"').removesuffix(b"-gz")
        if tag == b"*" or tag == base:
            return True
    return False


class PageCache:
    def __init__(self, app: ASGIApp, watch: AtlasWatch, max_bytes: int,
                 canonical_query: Callable[[str, bytes], bytes] = lambda path, query: query):
        self.app = app
        self.watch = watch
        self.max_bytes = max_bytes
        self.canonical_query = canonical_query  # the query as the page reads it (server.query): the key's half
        self.entries: OrderedDict[tuple[str, bytes], Entry] = OrderedDict()
        self.size = 0
        self.token: object = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"
        token = self.watch.token()  # read before building anything: cached data is never older than its token
        if token != self.token:
            self.entries.clear()
            self.size, self.token = 0, token
        query = self.canonical_query(scope["path"], scope["query_string"])
        key = (scope["path"], query)
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            await self.reply(entry, scope, send, head)
            return
        scope = {**scope, "method": "GET", "query_string": query, "state": scope.get("state", {})}
        capture = Capture(scope, send, head)
        await self.app(scope, receive, capture.send)
        if capture.entry is not None:
            self.store(key, capture.entry)
            await self.reply(capture.entry, scope, send, head)

    def store(self, key: tuple[str, bytes], entry: Entry) -> None:
        if entry.size > self.max_bytes // 8:
            return
        self.entries[key] = entry
        self.size += entry.size
        while self.size > self.max_bytes:
            _, evicted = self.entries.popitem(last=False)
            self.size -= evicted.size

    @staticmethod
    async def reply(entry: Entry, scope: Scope, send: Send, head: bool) -> None:
        use_gzip = entry.gzipped is not None and accepts_gzip(scope)
        etag = entry.etag[:-1] + b'-gz"' if use_gzip else entry.etag
        headers = [*entry.headers, (b"etag", etag)]
        if entry.gzipped is not None:
            headers.append((b"vary", b"Accept-Encoding"))
        if etag_matches(header(scope, b"if-none-match"), entry.etag):
            status, body = 304, b""
            headers = [(k, v) for k, v in headers if k in (b"etag", b"vary", b"cache-control")]
        else:
            status, body = entry.status, entry.gzipped if use_gzip else entry.body
            if use_gzip:
                headers.append((b"content-encoding", b"gzip"))
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})


class Capture:
    """Wraps ``send``: buffers a response its route marked cacheable, passes any other straight through."""

    def __init__(self, scope: Scope, send: Send, head: bool):
        self.scope, self._send, self.head = scope, send, head
        self.buffering = False
        self.start: Message | None = None
        self.chunks: list[bytes] = []
        self.entry: Entry | None = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.buffering = message["status"] == 200 and bool(self.scope["state"].get("cacheable"))
            if self.buffering:
                self.start = message
                return
        elif self.buffering:
            self.chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                self.entry = Entry.build(self.start["status"], list(self.start["headers"]), b"".join(self.chunks))
            return
        elif self.head:
            message = {**message, "body": b""}
        await self._send(message)

