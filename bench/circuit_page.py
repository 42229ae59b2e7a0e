"""How long a circuit page takes to build uncached: the HTML page and its JSON twin of a 1,500-node circuit, through
the whole app (routing, the page build from SQLite, the twin's validation, the template) with the response cache off,
beside a 100-node circuit built the same way, and optionally the same pages served by an older revision of the server
(``--baseline REV``, run from a ``git worktree`` of it on the same atlas).

The atlases are ``tests.lm_fixture.build_large``'s: a TinyLM-shaped model (2 blocks, d_model 256, d_mlp 1,024), every
unit measured, every kept node and embedding channel with 25 contexts, about 4 edges a node (as the sparse organism's
circuits have), every evidence key recorded. Each page is requested ``--repeat`` times; the minimum is the number to
quote on a shared machine (other jobs only ever add time), the median is printed beside it.

    .venv/bin/python bench/circuit_page.py                      # builds the atlases in a temporary directory
    .venv/bin/python bench/circuit_page.py --baseline HEAD~3    # and the same requests on that revision's server
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"large": 1500, "small": 100}
TARGET_MS = 200  # issue 19: a circuit page must build in under 200 ms uncached


def measure(atlases: dict[str, Path], path: str, repeat: int) -> dict[str, dict[str, tuple]]:
    """{circuit: {page: (min ms, median ms, median CPU ms, bytes)}} for the HTML page and the twin, with the response
    cache off. CPU time is the whole process's (the request runs on the app's threads), which other jobs on the
    machine add nothing to but contention."""
    os.environ["ATLASCOPE_CACHE_MB"] = "0"
    from fastapi.testclient import TestClient

    from server.app import create_app

    found: dict[str, dict[str, tuple]] = {}
    for name, atlas in atlases.items():
        with TestClient(create_app(atlas)) as client:
            for url in (path, path + ".json"):
                assert client.get(url).status_code == 200, url  # warm: imports, templates compiled, SQLite pages
                times, cpu = [], []
                for _ in range(repeat):
                    start, start_cpu = time.perf_counter(), time.process_time()
                    response = client.get(url)
                    times.append(1000 * (time.perf_counter() - start))
                    cpu.append(1000 * (time.process_time() - start_cpu))
                    assert response.status_code == 200
                found.setdefault(name, {})["json" if url.endswith(".json") else "html"] = (
                    min(times), statistics.median(times), statistics.median(cpu), len(response.content))
    return found


def baseline(revision: str, atlases: dict[str, Path], path: str, repeat: int) -> dict[str, dict[str, tuple]]:
    """The same measurement on another revision's server, from a temporary worktree of it (its code first on the
    path; the atlases and this script's measuring code are this revision's)."""
    with tempfile.TemporaryDirectory(prefix="circuit-bench-") as tree:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", tree, revision], check=True)
        try:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([tree, str(ROOT)])}
            measured = json.dumps({name: str(atlas) for name, atlas in atlases.items()})
            out = subprocess.run([sys.executable, __file__, "--measure", measured, "--path", path,
                                  "--repeat", str(repeat)], env=env, cwd=tree, check=True, capture_output=True,
                                 text=True).stdout
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tree], check=True)
    return json.loads(out.splitlines()[-1])


def report(label: str, found: dict[str, dict[str, tuple]]) -> None:
    for name, pages in found.items():
        for page, (best, median, cpu, size) in pages.items():
            print(f"  {label:>9} {name:>5} ({SIZES[name]:>5,} nodes) {page:>4}: {best:7.1f} ms min, {median:7.1f} ms "
                  f"median, {cpu:7.1f} ms CPU median ({size / 1e6:.2f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--atlas-dir", type=Path, help="where the atlases are (built there if missing)")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--baseline", help="also time the server of this git revision on the same atlases")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: measure these atlases, print JSON
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure({k: Path(v) for k, v in json.loads(args.measure).items()}, args.path, args.repeat)))
        return
    sys.path.insert(0, str(ROOT))
    from tests.lm_fixture import LARGE_SLUG, LARGE_TASK, build_large

    path = f"/models/{LARGE_SLUG}/circuits/{LARGE_TASK}"

    work = args.atlas_dir or Path(tempfile.mkdtemp(prefix="circuit-page-"))
    atlases = {name: work / name for name in SIZES}
    for name, atlas in atlases.items():
        if not (atlas / "atlas.db").exists():
            start = time.perf_counter()
            build_large(atlas, n_nodes=SIZES[name])
            print(f"built {atlas} ({SIZES[name]:,} nodes) in {time.perf_counter() - start:.1f} s")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"uncached circuit page builds, {args.repeat} requests each (target: < {TARGET_MS} ms for 1,500 nodes):")
    now = measure(atlases, path, args.repeat)
    report("this tree", now)
    if args.baseline:
        report(args.baseline[:9], baseline(args.baseline, atlases, path, args.repeat))
    best = now["large"]["html"][0]
    print(f"1,500-node circuit page: {best:.0f} ms uncached ({'under' if best < TARGET_MS else 'OVER'} the "
          f"{TARGET_MS} ms target)")


if __name__ == "__main__":
    main()
