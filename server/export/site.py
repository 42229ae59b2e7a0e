"""The atlas as a static site: every page the server links to, fetched from its app in this process and written as
files that a static host or an object store serves at the same URLs.

- A page ``/P`` becomes ``P/index.html`` (a static host serves a folder's ``index.html`` at ``/P``, redirecting to
  ``/P/``), its twin ``/P.json`` the file ``P.json``; assets and circuit-tracer downloads keep their paths; ``static/``
  is copied whole. Links stay as the server writes them, absolute paths, so the site is served from a host's root.
- A static host ignores query strings, so a page with one (a layer's further grid pages, sorts and thumbnails, the
  embed views) gets its query as a path segment: ``/models/m/conv1?page=2`` is ``/models/m/conv1/page=2/``, its twin
  ``/models/m/conv1.json?page=2`` is ``/models/m/conv1/page=2.json``, and the links to them in the written pages and
  twins say so (``static_url``).
- Search needs the server: ``search/index.html`` says so; ``404.html`` answers for paths the site lacks (the name
  most static hosts look for).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI

from server.export.asgi import Answer, get
from server.templating import package_dir, templates

SEEDS = ("/", "/openapi.json")  # the index links to every other page; /docs (Swagger UI) reads the API's schema
CONCURRENT = 4  # pages asked for at once: they are built on the app's threads, a few keep SQLite and the cores busy
LINK_ATTRIBUTE = re.compile(r'(\s(?:href|src)=")([^"]*)(")')
LINK_KEYS = frozenset({"url", "json_url"})  # where a twin names a page (server.urls.links)
NOTES = {  # pages of the static copy the server has no counterpart for: file -> (title, message)
    "search/index.html": ("search", "This is a static copy of an atlas, and search needs the server: run `atlascope "
                                    "serve --atlas DIR` on the atlas to search it."),
    "404.html": ("404", "No page at this address in this static copy of the atlas."),
}


def site_link(raw: str) -> str | None:
    """A link as the crawler asks the app for it (path and query, without the fragment) when it is a page of the
    site; None for another site, a fragment alone or static files (copied whole)."""
    url = raw.partition("#")[0]
    if not url.startswith("/") or url.startswith("//") or url.startswith("/static/"):
        return None
    return url


def static_url(url: str) -> str:
    """A site URL as the static copy has it: the same unless it has a query, which becomes a path segment."""
    path, _, query = url.partition("?")
    if not query:
        return path
    if path.endswith(".json"):
        return f"{path.removesuffix('.json').rstrip('/')}/{query}.json"
    return f"{path.rstrip('/')}/{query}/"


def site_file(url: str, is_html: bool) -> PurePosixPath:
    """Where the answer at ``url`` is written, relative to the export: the path a static host maps the URL to."""
    path = unquote(static_url(url))
    if is_html:
        path = path.rstrip("/") + "/index.html"
    return PurePosixPath(path.lstrip("/"))


def _static_link(raw: str) -> str:
    url = site_link(raw)
    if url is None or "?" not in url:
        return raw
    return static_url(url) + raw[len(url):]  # the fragment stays


def html_links(body: str) -> Iterator[str]:
    for match in LINK_ATTRIBUTE.finditer(body):
        yield html.unescape(match[2])


def static_html(body: str) -> str:
    """The page with each link to a URL with a query rewritten to its static copy's."""
    return LINK_ATTRIBUTE.sub(
        lambda m: m[1] + html.escape(_static_link(html.unescape(m[2]))) + m[3] if "?" in m[2] else m[0], body)


def json_links(data: Any) -> Iterator[str]:
    if isinstance(data, dict):
        for key, value in data.items():
            if key in LINK_KEYS and isinstance(value, str):
                yield value
            else:
                yield from json_links(value)
    elif isinstance(data, list):
        for value in data:
            yield from json_links(value)


def static_json(data: Any) -> Any:
    """The twin with each link to a URL with a query rewritten to its static copy's."""
    if isinstance(data, dict):
        return {key: _static_link(value) if key in LINK_KEYS and isinstance(value, str) else static_json(value)
                for key, value in data.items()}
    if isinstance(data, list):
        return [static_json(value) for value in data]
    return data


def is_html(answer: Answer) -> bool:
    return answer.content_type.startswith("text/html")


def is_json(answer: Answer) -> bool:
    return answer.content_type.startswith("application/json")


def links_and_body(answer: Answer) -> tuple[list[str], bytes]:
    """The links an answer holds, and the bytes to write for it (links to URLs with a query rewritten)."""
    if is_html(answer):
        text = answer.body.decode("utf-8")
        return list(html_links(text)), static_html(text).encode("utf-8")
    if is_json(answer):
        data = json.loads(answer.body)
        links = list(json_links(data))
        if any("?" in link for link in links):
            return links, json.dumps(static_json(data), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return links, answer.body
    return [], answer.body


def write_file(out: Path, relative: PurePosixPath, body: bytes) -> None:
    target = out.joinpath(relative)
    if out.resolve() not in target.resolve().parents:  # a URL whose segments climb out of the export
        raise ValueError(f"{relative} is outside {out}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)


async def crawl(app: FastAPI, out: Path, progress: Callable[[int, int], None]) -> list[str]:
    """Fetch every page reachable from ``SEEDS`` and write it under ``out``; ``progress(done, found)`` after each.
    Returns what did not answer 200 ("URL: status"), which is not written."""
    found: set[str] = set(SEEDS)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in SEEDS:
        queue.put_nowait(url)
    problems: list[str] = []
    done = 0

    async def worker() -> None:
        nonlocal done
        while True:
            url = await queue.get()
            try:
                answer = await get(app, url)
                if answer.status != 200:
                    problems.append(f"{url}: {answer.status}")
                else:
                    links, body = links_and_body(answer)
                    write_file(out, site_file(url, is_html(answer)), body)
                    for link in filter(None, map(site_link, links)):
                        if link not in found:
                            found.add(link)
                            queue.put_nowait(link)
                done += 1
                progress(done, len(found))
            finally:
                queue.task_done()

    workers = [asyncio.create_task(worker()) for _ in range(CONCURRENT)]
    joined = asyncio.create_task(queue.join())
    try:  # workers run until cancelled: one that ends has failed (a full disk), and its error ends the crawl
        await asyncio.wait([joined, *workers], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (joined, *workers):
            task.cancel()
    for task in workers:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()
    return problems


def write_notes(out: Path) -> None:
    page = templates.env.get_template("error.html")
    for relative, (status, message) in NOTES.items():
        write_file(out, PurePosixPath(relative), page.render(page={"status": status, "message": message}).encode())


def export_site(app: FastAPI, out: Path, progress: Callable[[int, int], None]) -> list[str]:
    """Write the static site of ``app``'s atlas into the empty directory ``out``; returns the links that did not
    answer 200 (none in an intact atlas)."""

    async def run() -> list[str]:
        async with app.router.lifespan_context(app):
            return await crawl(app, out, progress)

    shutil.copytree(package_dir("static"), out / "static")
    problems = asyncio.run(run())
    write_notes(out)
    return problems
