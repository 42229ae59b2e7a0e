"""Wall time of the demo precompute (every unit of TinyVision, channel + neuron objectives, 128 steps) from scratch.

    .venv/bin/python bench/demo_precompute.py [--steps 128] [--device cpu]

Runs the real CLI into a temporary atlas and prints the time and the number of images written.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", default="128")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        atlas = Path(tmp) / "atlas"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "precompute.cli", "precompute", "tinyvision", "--atlas", str(atlas),
                        "--objectives", "channel,neuron", "--steps", args.steps, "--device", args.device], check=True)
        seconds = time.perf_counter() - start
        with sqlite3.connect(atlas / "atlas.db") as db:
            images = db.execute("SELECT count(*) FROM unit_images").fetchone()[0]
    print(f"demo precompute: {images} images, {args.steps} steps, {args.device}: {seconds:.0f} s "
          f"({seconds / images:.2f} s/image)")


if __name__ == "__main__":
    main()
