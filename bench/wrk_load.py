"""wrk against a server over a rotating list of paths, and wrk's report parsed into numbers.

wrk requests one URL unless a Lua script builds each request; ours walks a list of paths in turn, so a run touches
every unit (or asset, or layer page) instead of one hot row that any cache would serve.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass

LUA = """
local paths = {%s}
local i = 0
request = function()
  i = i %% #paths + 1
  return wrk.format(nil, paths[i])
end
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # wrk's time units, in ms
# What browsers send; the server may gzip large pages, and the benchmark should pay for that as a browser would.
HEADERS = ["Accept-Encoding: gzip"]


@dataclass
class Result:
    requests: int
    rps: float
    p50_ms: float | None  # None when no request completed
    p99_ms: float | None
    bad_status: int  # responses that were neither 2xx nor 3xx
    connect: int
    read: int
    write: int
    timeouts: int  # wrk's --timeout; these are left out of its latency percentiles

    @property
    def errors(self) -> int:
        return self.bad_status + self.connect + self.read + self.write


def script(paths: list[str]) -> str:
    if not paths:
        raise ValueError("no paths to request")
    return LUA % ", ".join(json.dumps(path, ensure_ascii=True) for path in paths)


def run(base_url: str, paths: list[str], connections: int, seconds: int, threads: int = 2) -> Result:
    """``wrk -t2 -cC -dD --timeout 5s --latency`` rotating over ``paths`` (URL paths on ``base_url``)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script(paths))
        lua.flush()
        command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency",
                   "-s", lua.name, *(arg for header in HEADERS for arg in ("-H", header)), base_url]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse(done.stdout)


def milliseconds(value: str, unit: str) -> float:
    return float(value) * UNITS[unit]


def parse(report: str) -> Result:
    def number(pattern: str, default: float = 0) -> float:
        found = re.search(pattern, report, re.MULTILINE)
        return float(found.group(1)) if found else default

    def percentile(p: int) -> float | None:
        found = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m|h)\s*$", report, re.MULTILINE)
        return milliseconds(*found.groups()) if found else None

    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    connect, read, write, timeouts = map(int, sockets.groups()) if sockets else (0, 0, 0, 0)
    requests = int(number(r"^\s*(\d+) requests in"))
    return Result(requests=requests, rps=number(r"^Requests/sec:\s+([\d.]+)"),
                  p50_ms=percentile(50) if requests else None, p99_ms=percentile(99) if requests else None,
                  bad_status=int(number(r"Non-2xx or 3xx responses: (\d+)")), connect=connect, read=read,
                  write=write, timeouts=timeouts)
