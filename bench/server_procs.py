"""Servers under benchmark as process groups: start one on a free port, wait until it answers, read the memory of
each of its processes, and stop the whole group, workers included, however the benchmark ends (Ctrl-C too)."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Server:
    name: str
    url: str
    pid: int  # the main process, also the id of its process group
    log: Path
    command: str  # as run, for the record


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(name: str, command: list[str], ready_path: str, log_dir: Path, cwd: Path,
            env: dict[str, str] | None = None) -> Iterator[Server]:
    """Run ``command`` with ``{port}`` in it replaced by a free port, in a process group of its own, so that a Ctrl-C
    at the terminal reaches only the benchmark, which then stops the group; yield once ``ready_path`` answers 200."""
    port = free_port()
    log = log_dir / f"{name}.log"
    command = [part.replace("{port}", str(port)) for part in command]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
                                env={**os.environ, **(env or {})})
    server = Server(name, f"http://127.0.0.1:{port}", proc.pid, log, shlex.join(command))
    try:
        wait_ready(proc, server, ready_path)
        yield server
    finally:
        stop(proc)


def wait_ready(proc: subprocess.Popen, server: Server, path: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {proc.returncode}:\n{server.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(server.url + path, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} did not answer {path} within {seconds:.0f} s:\n{server.log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the group; SIGKILL to whatever is left of it after 15 s."""
    signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while group_alive(proc.pid) and time.monotonic() < deadline:
        proc.poll()  # reap the main process, or its zombie would count as alive
        time.sleep(0.1)
    signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def family(pid: int) -> list[int]:
    """A process and all its descendants (a server's workers)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited while we looked
        parents[int(stat.parent.name)] = int(fields[1])
    members, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        members += frontier
    return members


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) a process and its descendants have used so far: what serving cost, however many
    other processes share the cores."""
    total = 0
    for member in family(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> dict[int, tuple[str, int]]:
    """VmRSS in KiB of a process and all its descendants (a server's workers), by pid, with each one's name."""
    found = {}
    for member in family(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "VmRSS" in fields:
            found[member] = (fields["Name"].strip(), int(fields["VmRSS"].split()[0]))
    return found
