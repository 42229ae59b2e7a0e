"""Ways to damage a copy of an atlas, each as a real user, disk or killed run would, and a snapshot to prove that
something did not change it. Shared by the job's and verify's tests."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the sha256 of its bytes ("dir" for a directory)."""
    return {str(path.relative_to(root)): "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*"))}


def first_blob(atlas: Path) -> Path:
    with sqlite3.connect(f"file:{atlas / 'atlas.db'}?mode=ro", uri=True) as db:
        sha = db.execute("SELECT asset_sha256 FROM unit_images ORDER BY id LIMIT 1").fetchone()[0]
    return atlas / "blobs" / sha[:2] / sha


def missing_blob(atlas: Path) -> str:
    first_blob(atlas).unlink()
    return str(first_blob(atlas))


def damaged_blob(atlas: Path) -> str:
    first_blob(atlas).write_bytes(b"\x89PNG but not the right one")
    return str(first_blob(atlas))


def orphan_blob(atlas: Path) -> str:
    """A blob file no row names, as a run killed between its blobs and its commit leaves."""
    path = atlas / "blobs" / "ee" / ("ee" * 32)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"no row names me")
    return str(path)


def unreferenced_asset(atlas: Path) -> str:
    """An asset row (with its blob) that nothing uses, as a run killed after --force replaced an image leaves."""
    sha = "dd" * 32
    with sqlite3.connect(atlas / "atlas.db") as db:
        db.execute("INSERT INTO assets (sha256, media_type, size) VALUES (?, 'image/png', 3)", (sha,))
    (atlas / "blobs" / "dd").mkdir(exist_ok=True)
    (atlas / "blobs" / "dd" / sha).write_bytes(b"old")
    return f"assets row {sha}"


def tmp_file(atlas: Path) -> str:
    path = atlas / "tmp" / "half-written.123"
    path.write_bytes(b"x")
    return str(path)


def broken_reference(atlas: Path) -> str:
    with sqlite3.connect(atlas / "atlas.db") as db:
        db.execute("INSERT INTO unit_images (unit_id, kind, asset_sha256, params) SELECT 99999, 'channel', sha256, "
                   "'{}' FROM assets LIMIT 1")
    return "table unit_images row"


def garbage_index(atlas: Path) -> str:
    db = atlas / "atlas.db"
    db.write_bytes(os.urandom(db.stat().st_size))
    return str(db)


def truncated_index(atlas: Path) -> str:
    db = atlas / "atlas.db"
    db.write_bytes(db.read_bytes()[:db.stat().st_size // 2])
    return str(db)


def partly_garbage_index(atlas: Path) -> str:
    """16 pages of random bytes from the root page of the units table on; the header and schema stay valid."""
    db = atlas / "atlas.db"
    with sqlite3.connect(db) as conn:
        (root,), = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'units'")
        pages, = conn.execute("PRAGMA page_count").fetchone()
        size, = conn.execute("PRAGMA page_size").fetchone()
    assert root + 16 <= pages
    data = bytearray(db.read_bytes())
    data[(root - 1) * size:(root + 15) * size] = os.urandom(16 * size)
    db.write_bytes(bytes(data))
    return str(db)


def foreign_index(atlas: Path) -> str:
    """Someone else's SQLite database where the index belongs."""
    db = atlas / "atlas.db"
    db.unlink()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine, not an atlas')")
    return str(db)


def garbage_table_root(atlas: Path, table: str) -> str:
    """Random bytes over the root page of one table's b-tree: the rest of the index, ``meta`` included, stays
    readable, so the atlas opens and only what reads that table breaks."""
    db = atlas / "atlas.db"
    with sqlite3.connect(db) as conn:
        (root,), = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,))
        size, = conn.execute("PRAGMA page_size").fetchone()
    with open(db, "r+b") as fh:
        fh.seek((root - 1) * size)
        fh.write(os.urandom(size))
    return str(db)


def killed_mid_commit(atlas: Path) -> str:
    """A writer killed by kill -9 while SQLite was writing its transaction into the index: a hot journal stays
    beside it, which only a writer may roll back."""
    code = (f"import os, sqlite3\ndb = sqlite3.connect({str(atlas / 'atlas.db')!r}, isolation_level=None)\n"
            "db.execute('PRAGMA cache_size=1')\ndb.execute('BEGIN')\n"
            "db.execute(\"UPDATE units SET label = 'half-written'\")\nos._exit(9)\n")
    subprocess.run([sys.executable, "-c", code], check=False)
    assert (atlas / "atlas.db-journal").exists()
    return str(atlas / "atlas.db-journal")
