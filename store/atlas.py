"""One atlas = one directory: ``atlas.db`` (the SQLite index) and ``blobs/`` (content-addressed assets), or the index
and an object store its ``meta`` table names (``store.blobstore``: ``precompute --blobs s3://bucket/prefix``).

Blobs are immutable and named by the sha256 of their bytes, so a copy of the directory is a complete atlas and the
server can mount it read-only. A blob is written whole or not at all (locally to ``tmp/`` first, then renamed into
place), so a killed writer never leaves a half-written asset under a real name; index rows go in one transaction per
unit of work.

One writer at a time (``store.lock``). Before its first write it checks that the directory and index are writable,
the index is intact and is an atlas's, so a refusal leaves the atlas as it was; then it upgrades an older format in
place and collects what no row names (a killed run's blobs, replaced assets, temporary files).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, delete, event, insert, select, update
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from store.blobstore import BLOBS_DIR, BLOBS_KEY, Blob, BlobStore, RemoteBlobs, blob_store
from store.errors import BUSY, DAMAGED, INTERRUPTED, AtlasError, AtlasUnreadable, classify, describe, unwritable
from store.lock import writer_lock
from store.schema import FORMAT_VERSION, MIGRATIONS, Asset, Base, Meta, unreferenced_assets

DB_NAME = "atlas.db"
WRITER_BUSY_TIMEOUT_S = 60  # a writer waits this long for readers (a server, `atlascope verify`) to let it commit


class Atlas:
    def __init__(self, root: Path | str, engine: Engine):
        self.root = Path(root)
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self._new_blobs: list[Blob] | None = None  # blobs created by the open batch(), removed if it fails

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @cached_property
    def blobs(self) -> BlobStore:
        """Where the blobs are, as the index records it: a URL in its ``meta`` table, else the ``blobs/`` folder."""
        with self.engine.connect() as conn:
            url = conn.scalar(select(Meta.value).where(Meta.key == BLOBS_KEY))
        return blob_store(url, self.root / BLOBS_DIR, self.tmp_dir)

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    # -- opening -------------------------------------------------------------------------------------------------

    @classmethod
    def open_readonly(cls, root: Path | str) -> Atlas:
        """Open for serving. SQLite's ``mode=ro`` guarantees the server never writes, even by mistake."""
        atlas = cls.open_unchecked(root)
        atlas.check_readable()
        return atlas

    def check_readable(self) -> None:
        """That the index is an atlas's of this format: AtlasUnreadable when SQLite cannot read it now (busy,
        interrupted, damaged), AtlasError when it is someone else's database or of another format version."""
        try:
            with self.engine.connect() as conn:
                found = format_version(conn, self.db_path)
        except DatabaseError as exc:
            failure = classify(exc, self.db_path)
            if failure is not None and failure.kind in (INTERRUPTED, BUSY, DAMAGED):
                raise AtlasUnreadable(failure) from exc
            raise AtlasError(f"{self.db_path} is not an atlas index: {exc.orig}") from exc
        if problem := version_problem(self.root, found):
            raise AtlasError(problem)

    @classmethod
    def open_unchecked(cls, root: Path | str) -> Atlas:
        """Open read-only (``mode=ro``) without looking inside: for ``store.verify``, which reports what it finds."""
        db = Path(root) / DB_NAME
        if not db.is_file():
            raise AtlasError(f"no atlas at {root}: {db} does not exist (run `atlascope precompute` first)")
        engine = create_engine(
            f"sqlite:///file:{db.resolve()}?mode=ro&uri=true", connect_args={"check_same_thread": False}
        )
        return cls(root, engine)

    @classmethod
    @contextmanager
    def open_for_writing(cls, root: Path | str, wait: bool = True, on_wait: Callable[[], None] = lambda: None,
                         blobs: str | None = None) -> Iterator[Atlas]:
        """Open (creating if needed) for the precompute job, the only writer, holding the writer lock for the block:
        waits for another writer (calling ``on_wait``) or, with ``wait=False``, raises AtlasError. ``blobs``, a URL,
        puts the blobs of an atlas that has none yet in that object store (``choose_blobs``)."""
        root = Path(root)
        _make_directory(root)
        with writer_lock(root, wait, on_wait):
            for path in (root, root / DB_NAME, root / BLOBS_DIR, root / "tmp"):
                if failure := unwritable(path):
                    raise AtlasError(failure.message)
            atlas = cls(root, _writer_engine(root / DB_NAME))
            try:
                created = atlas._initialise()
                if blobs is not None:
                    atlas.choose_blobs(blobs)
                atlas.blobs.prepare()
                atlas.tmp_dir.mkdir(exist_ok=True)
                if not created:  # a new index in a used directory: its files are not ours to delete
                    atlas.collect_garbage()
                yield atlas
            finally:
                atlas.engine.dispose()

    def _initialise(self) -> bool:
        """Check the index (intact, an atlas's or empty, not newer), then create the tables of a new atlas or upgrade
        an older one, in one transaction: a failure leaves the file as it was. True if the atlas is new."""
        with self.engine.begin() as conn:
            problems = list(conn.exec_driver_sql("PRAGMA quick_check").scalars())
            if problems != ["ok"]:
                raise AtlasError(describe(DAMAGED, self.db_path, "; ".join(problems[:3])))
            found = format_version(conn, self.db_path)
            if found is None:
                Base.metadata.create_all(conn)
                conn.execute(insert(Meta).values(key="format_version", value=str(FORMAT_VERSION)))
            elif found < FORMAT_VERSION:
                for version in range(found, FORMAT_VERSION):
                    for statement in MIGRATIONS[version]:
                        conn.exec_driver_sql(statement)
                conn.execute(update(Meta).where(Meta.key == "format_version").values(value=str(FORMAT_VERSION)))
            elif problem := version_problem(self.root, found):
                raise AtlasError(problem)
        return found is None

    def choose_blobs(self, url: str) -> None:
        """Keep this atlas's blobs at ``url`` from now on, as its index records: allowed while the atlas holds no
        asset (a new one, or one with only its models registered); for one that holds some, a ``url`` other than
        where they are is refused (AtlasError), as its index would name blobs that are not there."""
        store = RemoteBlobs(url)
        recorded = self.blobs.location if isinstance(self.blobs, RemoteBlobs) else None
        if store.location == recorded:
            return
        with self.sessions() as session:
            holds = session.scalar(select(Asset.sha256).limit(1)) is not None
        if holds:
            where = f"at {recorded}" if recorded else f"in its {BLOBS_DIR}/ folder"
            raise AtlasError(f"atlas {self.root} keeps its blobs {where}, as its index records; --blobs {url} names "
                             f"another place: leave --blobs out{f' or give {recorded}' if recorded else ''}, or "
                             f"use another --atlas")
        store.prepare()  # a store that cannot be reached is refused before the index names it
        with self.sessions.begin() as session:
            session.merge(Meta(key=BLOBS_KEY, value=store.location))
        self.blobs = store

    def collect_garbage(self) -> None:
        """Remove what no row names: asset rows nothing references (images replaced by --force or re-rendered),
        blob files without an asset row (a run killed between its blobs and its commit) and temporary files. Rows go
        first, in a transaction; files after it commits. Only the writer calls this, under its lock."""
        with self.sessions.begin() as session:
            session.execute(delete(Asset).where(*unreferenced_assets()).execution_options(synchronize_session=False))
            named = set(session.scalars(select(Asset.sha256)))
        for path in self.stray_blobs(self.blob_files(), named):
            path.unlink()
        for path in self.tmp_dir.iterdir():
            path.unlink()

    # -- blobs ---------------------------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Blob:
        """Where the blob ``sha256`` is (a Path for a local atlas), whether it is there or not."""
        return self.blobs.blob(sha256)

    def blob_files(self) -> list[Blob]:
        return self.blobs.blobs()

    def stray_blobs(self, files: list[Blob], named: Collection[str]) -> list[Blob]:
        """The ``files`` that are not the blob of an asset in ``named`` (no row names them, or not where it would)."""
        return [path for path in files if path.name not in named or path != self.blob_path(path.name)]

    def blob_problem(self, sha256: str, size: int) -> str | None:
        """What is wrong with the blob of an indexed asset (missing, truncated, altered), or None if it is intact."""
        try:
            data = self.blob_path(sha256).read_bytes()
        except FileNotFoundError:
            return "missing"
        if len(data) != size:
            return f"{len(data)} bytes, the index says {size}"
        if hashlib.sha256(data).hexdigest() != sha256:
            return "its bytes do not hash to its name"
        return None

    def put_blob(self, data: bytes) -> str:
        """Store bytes under their sha256 (atomically) and return the hash. A blob already there is kept if it holds
        these bytes and replaced if not, so rendering an image again heals its damaged blob."""
        digest = hashlib.sha256(data).hexdigest()
        final = self.blob_path(digest)
        try:
            held = final.read_bytes()
        except FileNotFoundError:
            held = None
        if held == data:
            return digest
        self.blobs.write(digest, data)
        if held is None and self._new_blobs is not None:
            self._new_blobs.append(final)
        return digest

    @contextmanager
    def batch(self) -> Iterator[Session]:
        """A unit of work: its rows commit together, and if it fails (full disk, Ctrl-C) the blobs it created
        are removed with its rolled-back rows, so a failed batch leaves neither rows nor orphan blobs."""
        self._new_blobs = []
        try:
            with self.sessions.begin() as session:
                yield session
        except BaseException:
            for path in self._new_blobs:
                path.unlink(missing_ok=True)
            raise
        finally:
            self._new_blobs = None


def format_version(conn: Connection, db: Path) -> int | None:
    """The index's format version; None for a database without tables (a new atlas). AtlasError for an SQLite
    database that is someone else's: the writer must never add its tables to it."""
    tables = set(conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'").scalars())
    if not tables:
        return None
    found = conn.scalar(select(Meta.value).where(Meta.key == "format_version")) if "meta" in tables else None
    if found is None or not found.isdigit():
        raise AtlasError(f"{db} is not an atlas index but another SQLite database (tables: "
                         f"{', '.join(sorted(tables)[:8])}); atlascope leaves it alone: choose another --atlas")
    return int(found)


def version_problem(root: Path, found: int | None) -> str | None:
    """Why this atlascope cannot read an atlas of format version ``found``, or None if it can."""
    if found is None:
        return f"{root / DB_NAME} is not an atlas index: it has no tables (run `atlascope precompute` first)"
    if found < FORMAT_VERSION:
        return (f"atlas {root} has format version {found}, this atlascope reads {FORMAT_VERSION}; any `atlascope "
                f"precompute SLUG --atlas {root}` into it upgrades it in place")
    if found > FORMAT_VERSION:
        return (f"atlas {root} has format version {found}, made by a newer atlascope than this one (which reads "
                f"{FORMAT_VERSION}); upgrade atlascope")
    return None


def _make_directory(root: Path) -> None:
    """Create the atlas directory (the writer lock lives on it), saying plainly when the path runs through a file."""
    for path in (root, *root.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == root else f"lies under {path}, which is a file"
                raise AtlasError(f"--atlas {root} {where}; an atlas is a directory")
            break
    root.mkdir(parents=True, exist_ok=True)


def _writer_engine(db: Path) -> Engine:
    engine = create_engine(f"sqlite:///{db.resolve()}", connect_args={"timeout": WRITER_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):  # rollback journal (not WAL) keeps the atlas a plain, copyable file
        dbapi_conn.isolation_level = None  # SQLAlchemy's BEGIN below, so DDL is transactional too
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        dbapi_conn.execute("PRAGMA journal_mode=DELETE")

    @event.listens_for(engine, "begin")
    def _begin(conn):  # pysqlite commits DDL on its own; a killed first run must not leave half a schema
        conn.exec_driver_sql("BEGIN")

    return engine
