"""How fast `/search` answers: p50/p99 latency of its JSON twin over HTTP at a number of concurrent connections.

    .venv/bin/python bench/search.py --atlas DIR [--workers N] [--connections 8] [--requests 2000] [--seed 0]

Reads queries from the atlas itself (read-only): units by name (`MODEL LAYER N`, and `LAYER N`), tasks in words, the
tokens units' top contexts peak on, words and two-word phrases from their top contexts, and words no unit has; then
starts `atlascope serve` on the atlas twice, with its page cache off (ATLASCOPE_CACHE_MB=0: every request builds its
page, so this row is the cost of searching) and with the default cache (a query asked before is a cache hit), and
sends `--requests` searches through httpx with `--connections` at once, every query once before any repeats. Prints
p50, p99 and max per kind of query and in all, req/s, the server's CPU time per search (its processes' user and
system time over the row: what a search costs, however busy the machine), and the target: p99 < 50 ms at 8
connections with the cache off. The atlas needs its search index (`python -m precompute.search_index --atlas DIR`
builds it); the server shares the machine's cores with this client, so compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shlex
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

import server_procs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from store.search import INDEXED  # noqa: E402 (the repository root is on the path only now)

TARGET_MS, TARGET_CONNECTIONS = 50, 8
PER_KIND = 100  # queries drawn per kind at most
WORDS = re.compile(r"[A-Za-z_][A-Za-z_0-9]{2,}")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--atlas", type=Path, required=True, help="atlas to serve; it needs its search index")
    parser.add_argument("--workers", type=int, help="server processes (default: atlascope serve's own)")
    parser.add_argument("--connections", type=int, default=TARGET_CONNECTIONS, help="requests in flight at once")
    parser.add_argument("--requests", type=int, default=2000, help="searches per row")
    parser.add_argument("--seed", type=int, default=0, help="for drawing the queries")
    return parser.parse_args()


def queries(atlas: Path, seed: int) -> dict[str, list[str]]:
    """Each kind of query -> queries of it, drawn from what the atlas holds."""
    rng = random.Random(seed)
    with sqlite3.connect((atlas / "atlas.db").resolve().as_uri() + "?mode=ro", uri=True) as db:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (INDEXED,)).fetchone():
            sys.exit(f"{atlas} has no search index: python -m precompute.search_index --atlas {atlas} builds it")
        units = db.execute("SELECT m.slug, l.name, u.[index], u.stats FROM units u JOIN layers l ON l.id = u.layer_id "
                           "JOIN models m ON m.id = l.model_id ORDER BY random() LIMIT 2000").fetchall()
        tasks = sorted({slug for slug, in db.execute("SELECT slug FROM circuits")})
        windows = [json.loads(source) for source, in db.execute(
            "SELECT source FROM examples WHERE kind = 'top' ORDER BY random() LIMIT 400")]
    tokens = sorted({token.strip() for *_, stats in units for token in json.loads(stats).get("top_tokens", [])
                     if token.strip() and not any(char.isspace() for char in token.strip())})
    words = [WORDS.findall("".join(window["tokens"])) for window in windows]
    vocabulary = sorted({word for found in words for word in found})
    kinds = {
        "unit by name": [f"{slug} {layer} {index}" for slug, layer, index, _ in units[:PER_KIND]],
        "layer and unit": [f"{layer} {index}" for _, layer, index, _ in units[PER_KIND:2 * PER_KIND]],
        "task": [task.replace("_", " ") for task in tasks],
        "token": rng.sample(tokens, min(PER_KIND, len(tokens))),
        "context word": rng.sample(vocabulary, min(PER_KIND, len(vocabulary))),
        "context phrase": [" ".join(found[i:i + 2]) for found in words if len(found) > 1
                           for i in [rng.randrange(len(found) - 1)]][:PER_KIND],
        "no match": [f"zq{rng.randrange(10**9)}x" for _ in range(PER_KIND // 4)],
    }
    return {kind: found for kind, found in kinds.items() if found}


async def load(base: str, work: list[tuple[str, str]], connections: int) -> tuple[dict[str, list[float]], int, float]:
    """Send every (kind, query) of ``work`` with ``connections`` in flight: latencies in ms by kind, how many
    answers were not 200, and the seconds it all took."""
    latencies: dict[str, list[float]] = defaultdict(list)
    failures = 0
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        while not queue.empty():
            kind, query = queue.get_nowait()
            start = time.perf_counter()
            response = await client.get("/search.json", params={"q": query})
            latencies[kind].append((time.perf_counter() - start) * 1000)
            failures += response.status_code != 200

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(connections)))
        return latencies, failures, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def report(row: str, latencies: dict[str, list[float]], failures: int, seconds: float, cpu: float) -> float:
    """Print the row's table; returns its overall p99."""
    every = [ms for values in latencies.values() for ms in values]
    print(f"\n{row}: {len(every)} searches in {seconds:.1f} s ({len(every) / seconds:.0f}/s), {failures} not 200; "
          f"server CPU {1000 * cpu / len(every):.1f} ms per search")
    print(f"  {'kind':<16} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for kind, values in [*latencies.items(), ("all", every)]:
        print(f"  {kind:<16} {len(values):>6} {percentile(values, 50):>8.1f} {percentile(values, 99):>8.1f} "
              f"{max(values):>8.1f}")
    return percentile(every, 99)


def main() -> None:
    args = arguments()
    drawn = queries(args.atlas, args.seed)
    print("queries drawn from the atlas: " + ", ".join(f"{kind} {len(found)}" for kind, found in drawn.items()))
    distinct = [(kind, query) for kind, found in drawn.items() for query in found]
    random.Random(args.seed).shuffle(distinct)
    work = (distinct * (args.requests // len(distinct) + 1))[:args.requests]  # each query once before repeats
    command = [sys.executable, "-m", "precompute.cli", "serve", "--atlas", str(args.atlas), "--port", "{port}",
               *(["--workers", str(args.workers)] if args.workers else [])]
    p99 = {}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        for row, cache_mb in (("page cache off", "0"), ("page cache on", os.environ.get("ATLASCOPE_CACHE_MB", "64"))):
            with server_procs.serving("atlascope", command, "/-/health", Path(tmp), REPO,
                                      {"ATLASCOPE_CACHE_MB": cache_mb}) as server:
                warm_up = [("warm-up", f"warm{n}up") for n in range(args.connections * 4)]  # queries not in `work`
                asyncio.run(load(server.url, warm_up, args.connections))
                before = server_procs.cpu_seconds(server.pid)
                measured = asyncio.run(load(server.url, work, args.connections))
                p99[row] = report(f"{row} ({args.connections} connections)", *measured,
                                  server_procs.cpu_seconds(server.pid) - before)
    met = args.connections == TARGET_CONNECTIONS and p99["page cache off"] < TARGET_MS
    print(f"\ntarget p99 < {TARGET_MS} ms at {TARGET_CONNECTIONS} connections, page cache off: "
          f"{'met' if met else 'NOT MET'} ({p99['page cache off']:.1f} ms at {args.connections} connections)")
    print(f"reproduce: {shlex.join(['.venv/bin/python', 'bench/search.py', *sys.argv[1:]])}")


if __name__ == "__main__":
    main()
