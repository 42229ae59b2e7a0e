"""A corpus of hostile and malformed requests, sent raw over a socket so that no client library normalises them:
path traversal in every position, huge and odd numbers, long paths, odd methods and odd headers.

Whatever a client sends, the server answers below 500, answers JSON clients with the error shape, and never serves a
byte from outside the atlas. The HTTP parser may refuse a request outright (its own 4xx, or a closed connection for an
over-long line): that is fine, and the refusals are printed (``pytest -rP`` shows them).

The corpus runs against a server of its own, started like ``live_server``: a request that crashed or wedged it must
not take the other modules' tests down too.
"""

import gzip
import json
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest

TIMEOUT = 30  # seconds per request: a wedged server fails the test instead of hanging it
# Bytes that only files outside the atlas hold: /etc/passwd, the SQLite index, the repository's own sources.
LEAKS = (b"root:x:0:0", b"SQLite format 3", b"[build-system]", b"def create_app")
PARSER_STATUSES = {400, 413, 414, 431}  # what an HTTP parser answers before the application sees the request


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: tuple[str, ...] = ()

    @property
    def wants_json(self) -> bool:
        accept = any(h.lower().startswith("accept:") and "application/json" in h for h in self.headers)
        return accept or self.target.partition("?")[0].endswith(".json")

    def __str__(self) -> str:
        def short(text: str) -> str:
            return text if len(text) <= 100 else f"{text[:80]}…({len(text)} chars)"

        return " ".join([self.method, short(self.target), *(f"[{short(h)}]" for h in self.headers)])


@dataclass(frozen=True)
class Reply:
    status: int | None  # None: the server closed the connection without answering
    headers: dict[str, str]
    body: bytes

    @property
    def refused(self) -> bool:
        """Turned away below the application (by the HTTP parser, or Starlette's own Range check), which answers in
        plain text or not at all; the application's own errors are JSON or HTML."""
        parser_error = self.status in PARSER_STATUSES and self.headers.get("content-type", "").startswith("text/plain")
        return self.status is None or parser_error


def send(base: str, request: Request) -> Reply:
    """One request on a fresh connection, bytes exactly as given; read until the server closes."""
    url = urlsplit(base)
    lines = [f"{request.method} {request.target} HTTP/1.1", f"Host: {url.netloc}", "Connection: close",
             *request.headers, *(["Content-Length: 0"] if request.method in ("POST", "PUT", "PATCH") else [])]
    data = bytearray()
    with socket.create_connection((url.hostname, url.port), timeout=TIMEOUT) as sock:
        try:
            sock.sendall("\r\n".join([*lines, "", ""]).encode("latin-1"))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-request (an over-long line): read whatever the server said before closing
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return parse(bytes(data))


def parse(data: bytes) -> Reply:
    if not data:
        return Reply(None, {}, b"")
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    if headers.get("content-encoding") == "gzip" and body:
        body = gzip.decompress(body)
    return Reply(int(status_line.split()[1]), headers, body)


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2:]


def problems(request: Request, reply: Reply) -> list[str]:
    found = []
    if reply.status is not None and reply.status >= 500:
        found.append(f"answered {reply.status}: {reply.body[:200]!r}")
    found += [f"served {leak!r} from outside the atlas" for leak in LEAKS if leak in reply.body]
    if request.wants_json and request.method != "HEAD" and reply.status is not None and reply.status >= 400 \
            and not reply.refused:
        try:
            error = json.loads(reply.body)["error"]
            shaped = error["status"] == reply.status and isinstance(error["message"], str)
        except (ValueError, KeyError, TypeError):
            shaped = False
        if not shaped:
            found.append(f"a JSON client got {reply.status} without the error shape: {reply.body[:200]!r}")
    return found


@pytest.fixture(scope="module")
def server(start_server) -> str:
    with start_server() as url:
        yield url


@dataclass(frozen=True)
class Site:
    """URLs of a real model, layer, unit and image of the atlas, so that one bad segment at a time reaches each
    route with the others valid."""

    model: str
    layer: str
    unit: str
    asset: str

    def routes(self) -> list[str]:
        m, l, u = self.model, self.layer, self.unit
        return ["/", "/.json", m, f"{m}.json", l, f"{l}.json", u, f"{u}.json", self.asset, "/-/health", "/docs",
                "/openapi.json", "/static/atlas.css"]

    def positions(self, segment: str) -> list[str]:
        """``segment`` as the model, layer, unit, asset, static file and top-level name, and as ``?page=``."""
        m, l = self.model, self.layer
        layer_name = l.rsplit("/", 1)[1]
        unit_index = self.unit.rsplit("/", 1)[1]
        return [f"/{segment}", f"/models/{segment}", f"/models/{segment}.json",
                f"/models/{segment}/{layer_name}/{unit_index}.json", f"{m}/{segment}", f"{m}/{segment}.json",
                f"{l}/{segment}", f"{l}/{segment}.json", f"/assets/{segment}", f"/static/{segment}",
                f"{l}?page={segment}", f"{l}.json?page={segment}", f"{l}.json?kind={segment}"]


@pytest.fixture(scope="module")
def site(server: str) -> Site:
    with httpx.Client(base_url=server, timeout=TIMEOUT) as client:
        model = client.get(client.get("/.json").json()["models"][0]["json_url"]).json()
        layer = client.get(next(l for l in model["layers"] if l["n_rendered"])["json_url"]).json()
        unit = next(u for u in layer["units"] if u["image"])
    return Site(model["url"], layer["layer"]["url"], unit["url"], unit["image"]["url"])


def check(server: str, requests: list[Request]) -> dict[Request, Reply]:
    """Send every request; fail listing every one that was answered badly; print the ones the parser refused."""
    replies = {request: send(server, request) for request in requests}
    bad = [f"{request}: {problem}" for request, reply in replies.items() for problem in problems(request, reply)]
    refused = [f"{request} -> {reply.status or 'closed'}" for request, reply in replies.items() if reply.refused]
    print(f"{len(refused)} of {len(replies)} refused below the application:", *refused, sep="\n  ")
    assert not bad, f"{len(bad)} of {len(replies)} requests answered badly:\n" + "\n".join(bad[:40])
    return replies


CLIMBS = [
    "../../../../../../etc/passwd",
    "%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%252e%252e%252f%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    "..\\..\\..\\..\\..\\etc\\passwd",
    "..%5c..%5c..%5c..%5c..%5cetc%5cpasswd",
    "%c0%ae%c0%ae/%c0%ae%c0%ae/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%af%c0%ae%c0%ae%c0%afetc%c0%afpasswd",
    "\xc0\xae\xc0\xae/\xc0\xae\xc0\xae/etc/passwd",  # the overlong dots as raw bytes
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "..%00/..%00/etc/passwd",
    "passwd%00.png",
    "%00",
    "%ff",
    "%ff%fe..%2f",
    "..%2f..%2fatlas.db",  # from blobs/ab/ up to the index
    "..%2f..%2f..%2fatlas.db",
    "../../atlas.db",
    "..%2f..%2f..%2fpyproject.toml",  # from static/ or the atlas up to the repository
    "..%2fserver%2fapp.py",
    "..",
    "%2e%2e",
]


def test_path_traversal_never_leaves_the_atlas(server: str, site: Site):
    requests = [Request("GET", target) for climb in CLIMBS for target in site.positions(climb)]
    requests += [Request("GET", target) for target in ("../../../../etc/passwd", "//etc/passwd", "/static//etc/passwd",
                                                       "/static/../../../../etc/passwd", "*")]
    replies = check(server, requests)
    served = [str(request) for request, reply in replies.items() if reply.status == 200 and "?" not in request.target]
    assert not served, f"a climb out of its directory was answered 200: {served[:10]}"


HUGE = ["9" * 5_000, "9" * 100_000, "-" + "9" * 5_000]
ODD_NUMBERS = ["+5", "%2B5", "-0", "0x10", "1e3", "%205", "5%20", "0005", "5.0", "1_000", "%D9%A5", "%EF%BC%95",
               "Infinity", "NaN", "5%00", "-", ""]


def number_positions(site: Site, number: str) -> list[str]:
    layer = site.layer
    return [f"{layer}/{number}", f"{layer}/{number}.json", f"{layer}?page={number}", f"{layer}.json?page={number}"]


def test_huge_and_odd_numbers(server: str, site: Site):
    huge = [Request(method, target) for number in HUGE for target in number_positions(site, number)
            for method in ("GET", "HEAD")]
    odd = [Request("GET", target) for number in ODD_NUMBERS for target in number_positions(site, number)]
    replies = check(server, huge + odd)
    not_404 = [f"{request} -> {replies[request].status}" for request in huge
               if not replies[request].refused and replies[request].status != 404]
    assert not not_404, f"a number too big for any unit or page was not a 404: {not_404}"


def test_head_on_a_huge_unit_is_404(server: str, site: Site):
    for target in (f"{site.layer}/{'9' * 5_000}", f"{site.layer}/{'9' * 5_000}.json"):
        reply = send(server, Request("HEAD", target))
        assert (reply.status, reply.body) == (404, b""), f"HEAD {target[:60]}…"


def test_long_paths(server: str, site: Site):
    requests = []
    for size in (10_240, 102_400):
        requests += [Request("GET", f"/models/{'a' * size}"), Request("GET", f"/models/{'a' * size}.json"),
                     Request("GET", f"{site.layer}/{'x' * size}"), Request("GET", f"/assets/{'f' * size}.png"),
                     Request("GET", "/static/" + "a/" * (size // 2)), Request("GET", "/" + "%2e%2e/" * (size // 6)),
                     Request("GET", f"{site.layer}.json?page=1&kind={'k' * size}")]
    check(server, requests)


ODD_METHODS = ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "FROBNICATE"]


def test_odd_methods_on_every_route(server: str, site: Site):
    requests = [Request(method, route) for route in site.routes() for method in ODD_METHODS]
    replies = check(server, requests)
    not_405 = [f"{request} -> {reply.status}" for request, reply in replies.items()
               if not reply.refused and reply.status != 405]
    assert not not_405, f"a method no route serves was not a 405: {not_405}"


RANGES = ["bytes=garbage", "bytes=", "bytes=5-1", "bytes=-0", "bytes=99999999999999-", "bytes=0-" + "9" * 5_000,
          "bytes=" + ",".join(f"{i}-{i}" for i in range(2_000)), "pages=1-2", "bytes=0-0,-1,garbage"]


def test_odd_headers(server: str, site: Site):
    per_route = [
        ("If-None-Match: *",), ('If-None-Match: "unterminated, W/, ,,, W/""',), ("If-None-Match: " + "x" * 8_000,),
        ("If-Modified-Since: not a date",),
        ("Accept-Encoding: gzip;q=garbage, br;;;=, *;q=-1, identity;q=0",), ("Accept-Encoding: " + "x" * 8_000,),
        ("Accept: " + "application/json, " * 4_000,), ("Accept: application/json;q=garbage, */*;q=-1",),
    ]
    requests = [Request(method, route, headers) for route in site.routes() for headers in per_route
                for method in ("GET", "HEAD")]
    requests += [Request(method, site.asset, (f"Range: {r}", *extra)) for r in RANGES for method in ("GET", "HEAD")
                 for extra in ((), ("If-Range: garbage",))]
    check(server, requests)
