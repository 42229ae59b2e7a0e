"""`atlascope verify`: is this directory a sound atlas? Read-only and torch-free, so it runs beside a server or a job.

It checks what a copy, a disk or a killed job can break: the index (an atlas of this format, SQLite's integrity and
foreign-key checks), every indexed asset's blob (there, of the indexed size, hashing to its name), and leftovers (blobs
no row names, asset rows nothing uses, temporary files). Blobs are read where the index says they are: its ``blobs/``
folder or an object store (``store.blobstore``). The index is opened with ``mode=ro`` and SQLite's busy timeout waits
out a writer's commit.

While a precompute holds the writer lock, its batch in flight has blobs without rows and --force leaves replaced
asset rows until it ends: leftovers are the writer's to collect then, so they are not reported. A blob found missing
or damaged counts only if its asset row is still there afterwards (the writer deletes rows before their blobs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DatabaseError

from store.atlas import Atlas, format_version, version_problem
from store.errors import DAMAGED, AtlasError, classify
from store.lock import writer_active
from store.schema import Asset, unreferenced_assets

MAX_INDEX_PROBLEMS = 20


@dataclass(frozen=True)
class Problem:
    what: str  # "damaged index", "missing blob", "orphan blob", ...
    where: str  # a path, or a path and a row
    detail: str


@dataclass
class Report:
    atlas: Path
    assets: int = 0  # asset rows read
    blobs: int = 0  # blobs found
    problems: list[Problem] = field(default_factory=list)
    writer_active: bool = False  # a precompute held the writer lock: leftovers were not checked

    def lines(self) -> list[str]:
        if self.problems:
            return [f"{p.what}: {p.where} ({p.detail})" for p in self.problems]
        busy = " (a precompute is writing; leftovers are its own to collect)" if self.writer_active else ""
        return [f"ok: {self.assets} assets, {self.blobs} blobs checked{busy}"]

    def as_dict(self) -> dict[str, Any]:
        return {"atlas": str(self.atlas), "ok": not self.problems, "assets": self.assets, "blobs": self.blobs,
                "writer_active": self.writer_active, "problems": [vars(p) for p in self.problems]}


def verify_atlas(root: Path) -> Report:
    """Check the atlas at ``root``. AtlasError if there is none (no directory, no ``atlas.db``); SQLite and OSError
    failures other than a damaged index propagate for ``store.errors.classify``."""
    if root.exists() and not root.is_dir():
        raise AtlasError(f"no atlas at {root}: it is a file; an atlas is a directory (atlas.db and blobs/)")
    if not root.is_dir():
        raise AtlasError(f"no atlas at {root}: there is no such directory")
    atlas = Atlas.open_unchecked(root)
    try:
        return _verify(atlas)
    finally:
        atlas.engine.dispose()


def _verify(atlas: Atlas) -> Report:
    report = Report(atlas.root, writer_active=writer_active(atlas.root))
    try:
        files = atlas.blob_files()
    except DatabaseError:  # the index cannot say where its blobs are: the checks below report why
        files = []
    leftovers = list(atlas.tmp_dir.iterdir()) if atlas.tmp_dir.is_dir() else []
    report.blobs = len(files)
    db = str(atlas.db_path)
    try:
        with atlas.engine.connect() as conn:
            index = list(conn.exec_driver_sql(f"PRAGMA integrity_check({MAX_INDEX_PROBLEMS})").scalars())
            if index != ["ok"]:
                report.problems += [Problem("damaged index", db, line) for line in index]
                return report
            found = format_version(conn, atlas.db_path)
            if problem := version_problem(atlas.root, found):
                report.problems.append(Problem("format version", db, problem))
                if found is None:
                    return report
            report.problems += [Problem("broken reference", f"{db} table {table} row {row}", f"no such {parent} row")
                                for table, row, parent, _ in conn.exec_driver_sql("PRAGMA foreign_key_check")]
            assets = {sha: size for sha, size in conn.execute(select(Asset.sha256, Asset.size))}
            unreferenced = list(conn.scalars(select(Asset.sha256).where(*unreferenced_assets())))
    except AtlasError as exc:  # an SQLite database, but not an atlas's
        report.problems.append(Problem("not an atlas index", db, str(exc)))
        return report
    except DatabaseError as exc:
        if classify(exc, db).kind != DAMAGED:
            raise
        report.problems.append(Problem("damaged index", db, str(exc.orig)))
        return report
    report.assets = len(assets)
    report.problems += _blob_problems(atlas, assets)
    report.writer_active = report.writer_active or writer_active(atlas.root)
    if not report.writer_active:
        report.problems += [Problem("orphan blob", str(path), "no asset row names it; the next precompute removes it")
                            for path in atlas.stray_blobs(files, assets)]
        report.problems += [Problem("unreferenced asset", f"{db} assets row {sha}",
                                    "nothing uses it; the next precompute removes it and its blob")
                            for sha in unreferenced]
        report.problems += [Problem("leftover temporary file", str(path), "from an interrupted write; the next "
                                    "precompute removes it") for path in leftovers]
    return report


def _blob_problems(atlas: Atlas, assets: dict[str, int]) -> list[Problem]:
    found = {sha: problem for sha, size in assets.items() if (problem := atlas.blob_problem(sha, size))}
    if not found:
        return []
    with atlas.engine.connect() as conn:  # a writer may have dropped the row, then its blob, since we read it
        still = set(conn.scalars(select(Asset.sha256).where(Asset.sha256.in_(found))))
    return [Problem("missing blob" if problem == "missing" else "damaged blob", str(atlas.blob_path(sha)),
                    f"indexed asset of {assets[sha]} bytes" if problem == "missing" else problem)
            for sha, problem in found.items() if sha in still]
