"""How fast `atlascope serve` answers, against a bare FastAPI + SQLite route measured in the same run.

    .venv/bin/python bench/serve_load.py [--atlas DIR] [--workers N] [--duration 10] [--connections 64,256]
                                         [--warmup 2] [--datasette PATH] [--soak] [--soak-duration 60]

Starts `atlascope serve --workers N` on the atlas (without --atlas: a quick one, every unit of TinyVision at 4 steps,
built into a temporary directory in a minute or two), `bench/bare_route.py` under uvicorn with the same workers, and,
when a `datasette` binary is found (--datasette, or on PATH), datasette on the same atlas.db as a second reference.
After a short unmeasured warm-up of each, wrk (2 threads, 5 s timeout) rotates through every unit's JSON twin, every
unit page, every unit page with a query string new on each request (`?x=N`: a cache-busting client, which must cost
no page build), every layer page (HTML and JSON, each image kind), every image, and the bare route over every unit id, at
each connection count, and prints req/s, p50/p99 latency and errors per row, the unit/bare ratios, and the targets,
met or not. `--soak` then runs 256 connections on pages and images mixed while a thread probes /-/health every
second, and reports the probes' latency and every server process's memory before and after. Settings reach the
server through the environment (ATLASCOPE_CACHE_MB=0 turns its page cache off). Every process it starts is stopped on
exit, Ctrl-C included.

wrk and the servers share the machine's cores: compare rows of one run, not runs on different machines.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import server_procs
import wrk_load

REPO = Path(__file__).resolve().parents[1]
QUICK_ATLAS = ["--objectives", "channel,neuron", "--steps", "4", "--device", "cpu"]  # every unit of TinyVision
TARGET_CONNECTIONS = 64
SOAK_CONNECTIONS = 256


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--atlas", type=Path, help="atlas to serve (default: build a quick one)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="server processes (default: CPUs)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", default="64,256", help="comma-separated connection counts")
    parser.add_argument("--warmup", type=int, default=2, help="seconds per row of unmeasured load first (0: none)")
    parser.add_argument("--datasette", help="datasette binary to compare with (default: datasette on PATH, if any)")
    parser.add_argument("--soak", action="store_true", help="then soak: 256 connections, pages and images mixed")
    parser.add_argument("--soak-duration", type=int, default=60, help="seconds of soak")
    return parser.parse_args()


def quick_atlas(tmp: Path) -> Path:
    atlas = tmp / "atlas"
    print(f"building a quick atlas in {atlas} (a minute or two)", flush=True)
    subprocess.run([sys.executable, "-m", "precompute.cli", "precompute", "tinyvision", "--atlas", str(atlas),
                    *QUICK_ATLAS], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return atlas


def get_json(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=30) as response:
        return json.load(response)


def site_paths(base: str) -> dict[str, list[str]]:
    """The paths of every page and image of the served atlas, found by following its JSON twins."""
    paths: dict[str, list[str]] = {"unit JSON": [], "unit HTML": [], "layer pages": []}
    for model in get_json(base, "/.json")["models"]:
        for layer in get_json(base, model["json_url"])["layers"]:
            first = get_json(base, layer["json_url"])
            for kind in first.get("kinds", [{"kind": None, "json_url": first["json_url"]}]):  # language: no kinds
                page = get_json(base, kind["json_url"])
                while True:
                    paths["layer pages"] += [page["url"], page["json_url"]]
                    if kind["kind"] == first.get("kind"):  # every kind lists the same units: take them once
                        paths["unit JSON"] += [unit["json_url"] for unit in page["units"]]
                        paths["unit HTML"] += [unit["url"] for unit in page["units"]]
                    if not page["page"]["next"]:
                        break
                    page = get_json(base, page["page"]["next"]["json_url"])
    paths["assets"] = sorted({image["url"] for path in paths["unit JSON"]
                              for image in get_json(base, path).get("images", [])})
    return paths


def unit_ids(atlas: Path) -> list[int]:
    with sqlite3.connect((atlas / "atlas.db").resolve().as_uri() + "?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT id FROM units ORDER BY id")]


def server_commands(args: argparse.Namespace, atlas: Path) -> dict[str, tuple[list[str], str, dict[str, str]]]:
    """Each server's name -> (its command, "{port}" standing for its port; the path that answers 200 once it is
    ready; environment it needs)."""
    db, workers = str(atlas / "atlas.db"), str(args.workers)
    commands = {
        "atlascope": ([sys.executable, "-m", "precompute.cli", "serve", "--atlas", str(atlas), "--port", "{port}",
                       "--workers", workers], "/-/health", {}),
        "bare": ([sys.executable, "-m", "uvicorn", "--app-dir", str(REPO / "bench"), "bare_route:app", "--host",
                  "127.0.0.1", "--port", "{port}", "--workers", workers, "--log-level", "warning"], "/docs",
                 {"BARE_ATLAS_DB": db}),
    }
    if datasette := args.datasette or shutil.which("datasette"):
        commands["datasette"] = ([datasette, "serve", "--immutable", db, "--host", "127.0.0.1", "--port", "{port}"],
                                 "/-/versions.json", {})
    return commands


def rows_to_run(servers: dict[str, server_procs.Server], atlas: Path) -> dict[str, tuple[str, list[str]]]:
    """Each benchmark row's name -> (base URL, paths to rotate through)."""
    base = servers["atlascope"].url
    rows = {name: (base, paths) for name, paths in site_paths(base).items()}
    # every request a new query string, as a cache-busting client sends: the page must not be built again for it
    rows["unit HTML ?x=N"] = (base, [f"{path}?x={n}" for n, path in enumerate(rows["unit HTML"][1] * 8)])
    ids = unit_ids(atlas)
    rows["bare route"] = (servers["bare"].url, [f"/units/{i}" for i in ids])
    if "datasette" in servers:
        rows["datasette row"] = (servers["datasette"].url, [f"/atlas/units/{i}.json" for i in ids])
    return rows


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_table(results: dict[tuple[str, int], wrk_load.Result]) -> None:
    print(f"\n{'what':<14} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx/3xx':>11} "
          f"{'sock err':>8} {'timeouts':>8}")
    for (name, connections), r in results.items():
        print(f"{name:<14} {connections:>5} {r.rps:>9.0f} {ms(r.p50_ms):>8} {ms(r.p99_ms):>8} {r.bad_status:>11} "
              f"{r.connect + r.read + r.write:>8} {r.timeouts:>8}")


def print_ratios(results: dict[tuple[str, int], wrk_load.Result], connection_counts: list[int]) -> None:
    for connections in connection_counts:
        bare = results[("bare route", connections)].rps
        for name in ("unit JSON", "unit HTML"):
            ratio = results[(name, connections)].rps / bare if bare else float("nan")
            print(f"{name} / bare route at {connections} connections: {ratio:.2f}x")


def print_targets(results: dict[tuple[str, int], wrk_load.Result]) -> None:
    """The speed targets of issue 5, judged at 64 connections; a row with errors meets none."""
    at = {name: r for (name, connections), r in results.items() if connections == TARGET_CONNECTIONS}
    if not at:
        print(f"\ntargets are set at {TARGET_CONNECTIONS} connections, which this run did not measure")
        return

    def clean(name: str) -> bool:
        return at[name].errors == 0 and at[name].timeouts == 0

    ours = [name for name in at if name not in ("bare route", "datasette row")]
    checks = [
        ("unit JSON >= 2,000 req/s", clean("unit JSON") and at["unit JSON"].rps >= 2000),
        ("unit JSON >= 0.8x bare route", clean("unit JSON") and at["unit JSON"].rps >= 0.8 * at["bare route"].rps),
        ("unit HTML >= 1,200 req/s", clean("unit HTML") and at["unit HTML"].rps >= 1200),
        (f"p99 < 100 ms on every atlascope row ({', '.join(ours)})",
         all(clean(name) and at[name].p99_ms is not None and at[name].p99_ms < 100 for name in ours)),
    ]
    print(f"\ntargets at {TARGET_CONNECTIONS} connections:")
    for text, met in checks:
        print(f"  {'met    ' if met else 'NOT MET'}  {text}")


def soak(server: server_procs.Server, paths: list[str], seconds: int) -> None:
    """256 connections on pages and images mixed while a thread probes /-/health once a second."""
    before = server_procs.rss(server.pid)
    probes: list[float | str] = []  # latency in ms, or what went wrong
    done = threading.Event()

    def probe() -> None:
        while not done.wait(max(0.0, 1 - (time.perf_counter() % 1))):
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(server.url + "/-/health", timeout=10) as response:
                    response.read()
                    probes.append((time.perf_counter() - start) * 1000 if response.status == 200 else
                                  f"status {response.status}")
            except OSError as exc:
                probes.append(f"{type(exc).__name__}: {exc}")

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        result = wrk_load.run(server.url, paths, SOAK_CONNECTIONS, seconds)
    finally:
        done.set()
        prober.join()
    after = server_procs.rss(server.pid)
    latencies = [p for p in probes if isinstance(p, float)]
    failures = [p for p in probes if isinstance(p, str)]
    print(f"\nsoak: {SOAK_CONNECTIONS} connections, {seconds} s, {len(paths)} paths (pages and images mixed)")
    print(f"  requests {result.requests} ({result.rps:.0f}/s), errors {result.errors} "
          f"(non-2xx/3xx {result.bad_status}, socket {result.connect + result.read + result.write}), "
          f"timeouts {result.timeouts}, p50 {ms(result.p50_ms)} ms, p99 {ms(result.p99_ms)} ms")
    if latencies:
        print(f"  /-/health: {len(probes)} probes, {len(failures)} failed, latency median "
              f"{statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms")
    else:
        print(f"  /-/health: {len(probes)} probes, all failed")
    for failure in failures[:5]:
        print(f"    {failure}")
    print("  server memory (VmRSS, MiB), before -> after:")
    for pid in sorted(before.keys() | after.keys()):
        role = "main" if pid == server.pid else "child"
        name, was = before.get(pid, ("?", None))
        name, now = after.get(pid, (name, None))
        print(f"    {pid:>7} {role:<5} {name:<15} {mib(was):>7} -> {mib(now):>7}")


def mib(kib: int | None) -> str:
    return "gone" if kib is None else f"{kib / 1024:.1f}"


def reproduce() -> str:
    env = [f"{key}={value}" for key, value in sorted(os.environ.items()) if key.startswith("ATLASCOPE_")]
    return shlex.join([*env, ".venv/bin/python", "bench/serve_load.py", *sys.argv[1:]])


def main() -> None:
    args = arguments()
    connection_counts = [int(c) for c in args.connections.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind the ExitStack, stopping the servers
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="serve_load-")))
        atlas = args.atlas or quick_atlas(tmp)
        servers = {}
        for name, (command, ready, env) in server_commands(args, atlas).items():
            servers[name] = stack.enter_context(server_procs.serving(name, command, ready, tmp, REPO, env))
            print(f"{name} at {servers[name].url}: {servers[name].command}", flush=True)
        rows = rows_to_run(servers, atlas)
        print(f"\n{os.cpu_count()} CPUs, {args.workers} workers per server, wrk -t2 --timeout 5s, "
              f"{args.duration} s per row; paths: " + ", ".join(f"{n} {len(p)}" for n, (_, p) in rows.items()))
        for base, paths in rows.values() if args.warmup else ():  # fills caches and thread pools; not measured
            wrk_load.run(base, paths, connection_counts[0], args.warmup)
        results = {}
        for connections in connection_counts:
            for name, (base, paths) in rows.items():
                results[(name, connections)] = wrk_load.run(base, paths, connections, args.duration)
                print(f"  {name} at {connections} connections: {results[(name, connections)].rps:.0f} req/s",
                      flush=True)
        print_table(results)
        print()
        print_ratios(results, connection_counts)
        print_targets(results)
        if args.soak:
            mixed = [path for name in ("unit JSON", "unit HTML", "layer pages", "assets") for path in rows[name][1]]
            random.Random(0).shuffle(mixed)  # mixed at every moment, not one kind of page after another
            soak(servers["atlascope"], mixed, args.soak_duration)
        print(f"\nreproduce: {reproduce()}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted; every process it started is stopped", file=sys.stderr)
        sys.exit(130)
