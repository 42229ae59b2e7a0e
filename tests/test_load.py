"""Hundreds of concurrent requests against the real server over HTTP: every one completes with 200, and
``/-/health`` answers while they run.

This guards against the stall of issue 5: request-scoped database sessions held pool connections while their
requests waited for a thread, so 56 or more concurrent connections hung the server. One worker with the page cache
off sends every request to SQLite, the path that stalled; the default configuration is checked too. Client timeouts
turn a regression into a failure instead of a hang. Nothing here measures speed: that is ``bench/serve_load.py``'s.
"""

import asyncio
from collections import Counter

import httpx
import pytest

CONCURRENCY = 256
TIMEOUT = httpx.Timeout(60)
CONFIGS = {
    "one-worker-uncached": (["--workers", "1"], {"ATLASCOPE_CACHE_MB": "0"}),
    "default": ([], {}),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def server(request: pytest.FixtureRequest, start_server) -> str:
    args, env = CONFIGS[request.param]
    with start_server(*args, env=env) as url:
        yield url


def site_urls(base: str) -> list[str]:
    """Every page the site links to, found by following the JSON twins: index and model pages, each layer page of
    each image kind (HTML and JSON), every unit page of every layer (HTML and JSON), and every image they show."""
    urls: set[str] = {"/", "/.json"}
    with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        for model in client.get("/.json").raise_for_status().json()["models"]:
            urls |= {model["url"], model["json_url"]}
            for layer in client.get(model["json_url"]).raise_for_status().json()["layers"]:
                kinds = client.get(layer["json_url"]).raise_for_status().json()["kinds"]
                for kind in kinds:
                    next_page = kind
                    while next_page:
                        page = client.get(next_page["json_url"]).raise_for_status().json()
                        urls |= {page["url"], page["json_url"]}
                        for unit in page["units"]:
                            urls |= {unit["url"], unit["json_url"]}
                            if unit["image"]:
                                urls.add(unit["image"]["url"])
                        next_page = page["page"]["next"]
    return sorted(urls)


async def load(base: str, urls: list[str]) -> tuple[dict[str, int | str], int | str, int]:
    """GET every URL, at most CONCURRENCY at a time; once the first answers are in, probe ``/-/health`` on a
    connection of its own. Returns each URL's status (or the error that ended it), the probe's, and how many load
    requests were still unanswered when the probe was sent."""
    results: dict[str, int | str] = {}
    underway = asyncio.Event()
    # A fresh connection per request. Reusing one that the server closed after its keep-alive timeout (5 s idle, which
    # a starved client on two busy cores can reach) fails as "Server disconnected": a client-side race that would
    # make this test flaky. Keep-alive under load is measured by bench/serve_load.py, whose wrk reports such errors.
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=0)

    async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT, limits=limits) as client, \
            httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as probe:

        async def fetch(url: str) -> None:
            try:
                results[url] = (await client.get(url)).status_code
            except httpx.HTTPError as exc:
                results[url] = f"{type(exc).__name__}: {exc}"
            if len(results) >= CONCURRENCY // 8:
                underway.set()

        async def health() -> tuple[int | str, int]:
            await underway.wait()
            unanswered = len(urls) - len(results)
            try:
                return (await probe.get("/-/health")).status_code, unanswered
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}: {exc}", unanswered

        *_, (health_status, unanswered) = await asyncio.gather(*map(fetch, urls), health())
    return results, health_status, unanswered


def test_concurrent_requests_all_complete(server: str):
    urls = site_urls(server)
    assert len(urls) >= 2 * CONCURRENCY, f"only {len(urls)} URLs: too few to load the server"
    results, health_status, unanswered = asyncio.run(load(server, urls))
    failed = {url: status for url, status in results.items() if status != 200}
    kinds = Counter(str(status).partition(":")[0] for status in failed.values())
    assert not failed, f"{len(failed)} of {len(urls)} requests failed ({dict(kinds)}), e.g. {list(failed.items())[:5]}"
    assert unanswered > 0, "the health probe went out after the load had finished: it proves nothing"
    assert health_status == 200, f"/-/health answered {health_status} with {unanswered} requests in flight"
