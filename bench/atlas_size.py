"""What a vision model's dataset examples and weights cost in an atlas, per 1,000 units, against storing a PNG per
example crop.

    .venv/bin/python bench/atlas_size.py [--atlas PATH] [--model tinyvision]

Without ``--atlas`` it precomputes one first (``atlascope precompute tinyvision`` on every layer, the built-in
dataset, feature visualisations cut to one step since they are not measured here). It reads the atlas with sqlite3
and Pillow alone and prints, for the model:
- example rows: their share of the index (SQLite's dbstat pages of the examples table and its indexes);
- example images: the distinct dataset images the examples use, each stored once (blob bytes), and how many
  examples share one;
- the alternative: every example as its own PNG of the square its box shows (cut from the stored image, the way the
  page shows it), encoded now to compare;
- weights: kernel edge rows and their kernel pictures;
and each per 1,000 units. Blob bytes are file sizes; a file system's blocks (often 4 KiB) make small files cost
more on disk, which the "on disk" column counts.
"""

from __future__ import annotations

import argparse
import io
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from store.keys import CropKey, EdgeKind, ExampleKind

BLOCK = 4096


def on_disk(sizes: list[int]) -> int:
    return sum(-(-size // BLOCK) * BLOCK for size in sizes)


def table_bytes(db: sqlite3.Connection, table: str) -> int:
    """Pages of a table and its indexes (dbstat), all models' rows together."""
    names = [table, *(name for name, in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND "
                                                   "tbl_name = ?", (table,)))]
    return sum(db.execute(f"SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ({','.join('?' * len(names))})",
                          names).fetchone())


def blob(atlas: Path, sha: str) -> bytes:
    return (atlas / "blobs" / sha[:2] / sha).read_bytes()


def crop_png(image: Image.Image, box: list[int]) -> int:
    """Bytes of one example as its own PNG: the square around its box, as the unit page shows it."""
    left, top, right, bottom = box
    side = max(right - left, bottom - top, 1)
    x0, y0 = left - (side - (right - left)) // 2, top - (side - (bottom - top)) // 2
    out = io.BytesIO()
    image.crop((x0, y0, x0 + side, y0 + side)).save(out, format="PNG", optimize=True)
    return out.tell()


def measure(atlas: Path, model: str) -> None:
    db = sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True)
    model_id, = db.execute("SELECT id FROM models WHERE slug = ?", (model,)).fetchone()
    in_model = "SELECT u.id FROM units u JOIN layers l ON u.layer_id = l.id WHERE l.model_id = ?"
    examples = db.execute(f"SELECT e.asset_sha256, json_extract(e.source, '$.{CropKey.BOX}') FROM examples e "
                          f"WHERE e.unit_id IN ({in_model}) AND e.kind IN (?, ?)",
                          (model_id, ExampleKind.TOP, ExampleKind.MIDDLE)).fetchall()
    units = db.execute(f"SELECT count(DISTINCT e.unit_id) FROM examples e WHERE e.unit_id IN ({in_model})",
                       (model_id,)).fetchone()[0]
    all_examples = db.execute("SELECT count(*) FROM examples").fetchone()[0]
    rows = table_bytes(db, "examples") * len(examples) // max(all_examples, 1)
    images = sorted({sha for sha, _ in examples})
    image_sizes = [db.execute("SELECT size FROM assets WHERE sha256 = ?", (sha,)).fetchone()[0] for sha in images]
    crops, decoded = [], {}
    for sha, box in examples:
        if sha not in decoded:
            decoded[sha] = Image.open(io.BytesIO(blob(atlas, sha))).convert("RGB")
        crops.append(crop_png(decoded[sha], [int(v) for v in box.strip("[]").split(",")]))
    kernels = db.execute(f"SELECT a.size FROM edges e JOIN assets a ON a.sha256 = e.asset_sha256 WHERE e.circuit_id "
                         f"IS NULL AND e.kind IN (?, ?) AND e.dst_unit_id IN ({in_model})",
                         (EdgeKind.WEIGHT, EdgeKind.EXPANDED, model_id)).fetchall()
    all_edges = db.execute("SELECT count(*) FROM edges").fetchone()[0]
    edge_rows = table_bytes(db, "edges") * len(kernels) // max(all_edges, 1)
    kernel_sizes = [size for size, in kernels]

    def line(what: str, count: int, size: int, disk: int | None = None) -> str:
        per = 1000 / units
        disk_text = f"{disk / 1e6:9.2f} MB" if disk is not None else " " * 12
        return (f"{what:<44} {count:>9,} {size / 1e6:9.2f} MB {disk_text}   per 1,000 units: {size * per / 1e6:8.2f} MB"
                + (f", {disk * per / 1e6:.2f} MB on disk" if disk is not None else ""))

    print(f"{model} in {atlas}: {units:,} units with examples, {len(examples):,} examples "
          f"({len(examples) / units:.0f} per unit)")
    print(f"{'':<44} {'count':>9} {'bytes':>12} {'on disk':>12}")
    print(line("example rows (index)", len(examples), rows))
    print(line("example images, each stored once", len(images), sum(image_sizes), on_disk(image_sizes)))
    print(line("  instead: one PNG per example crop", len(crops), sum(crops), on_disk(crops)))
    print(line("kernel edge rows (index)", len(kernels), edge_rows))
    print(line("kernel pictures", len(kernel_sizes), sum(kernel_sizes), on_disk(kernel_sizes)))
    ours = rows + sum(image_sizes)
    naive = rows + sum(crops)
    print(f"examples in all: {ours / 1e6:.2f} MB ({ours * 1000 / units / 1e6:.2f} MB per 1,000 units) against "
          f"{naive / 1e6:.2f} MB with a PNG per crop: {naive / ours:.1f}x smaller; on disk "
          f"{(rows + on_disk(crops)) / (rows + on_disk(image_sizes)):.1f}x. An image serves "
          f"{len(examples) / len(images):.1f} examples on average.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--atlas", type=Path, help="an atlas with the model's examples (default: build one)")
    parser.add_argument("--model", default="tinyvision")
    args = parser.parse_args()
    if args.atlas:
        measure(args.atlas, args.model)
        return
    with tempfile.TemporaryDirectory() as tmp:
        atlas = Path(tmp) / "atlas"
        subprocess.run([sys.executable, "-m", "precompute.cli", "precompute", args.model, "--atlas", str(atlas),
                        "--objectives", "channel", "--steps", "1", "--device", "cpu"], check=True)
        measure(atlas, args.model)


if __name__ == "__main__":
    main()
