"""One atlas = one directory: ``atlas.db`` (the SQLite index) and ``blobs/`` (content-addressed assets).

Blobs are immutable and named by the sha256 of their bytes, so a copy of the directory is a complete atlas and the
server can mount it read-only. A blob is written to ``tmp/`` first and renamed into place, so a killed writer never
leaves a half-written asset under a real name; index rows go in one transaction per unit of work.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import sessionmaker

from store.schema import FORMAT_VERSION, Base, Meta

DB_NAME = "atlas.db"


class AtlasError(Exception):
    """The directory is not a usable atlas (missing, wrong format version)."""


class Atlas:
    def __init__(self, root: Path | str, engine: Engine):
        self.root = Path(root)
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    # -- opening -------------------------------------------------------------------------------------------------

    @classmethod
    def open_readonly(cls, root: Path | str) -> Atlas:
        """Open for serving. SQLite's ``mode=ro`` guarantees the server never writes, even by mistake."""
        db = Path(root) / DB_NAME
        if not db.is_file():
            raise AtlasError(f"no atlas at {root}: {db} does not exist (run `atlascope precompute` first)")
        engine = create_engine(
            f"sqlite:///file:{db.resolve()}?mode=ro&uri=true", connect_args={"check_same_thread": False}
        )
        atlas = cls(root, engine)
        atlas._check_version()
        return atlas

    @classmethod
    def open_for_writing(cls, root: Path | str) -> Atlas:
        """Open (creating if needed) for the precompute job, the only writer; clears leftovers of killed runs."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        engine = create_engine(f"sqlite:///{(root / DB_NAME).resolve()}")

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # rollback journal (not WAL) keeps the atlas a plain, copyable file
            dbapi_conn.execute("PRAGMA foreign_keys=ON")
            dbapi_conn.execute("PRAGMA journal_mode=DELETE")

        atlas = cls(root, engine)
        shutil.rmtree(atlas.tmp_dir, ignore_errors=True)
        atlas.tmp_dir.mkdir()
        atlas.blobs_dir.mkdir(exist_ok=True)
        Base.metadata.create_all(engine)
        with atlas.sessions.begin() as session:
            if session.get(Meta, "format_version") is None:
                session.add(Meta(key="format_version", value=str(FORMAT_VERSION)))
        atlas._check_version()
        return atlas

    def _check_version(self) -> None:
        try:
            with self.sessions() as session:
                found = session.scalar(select(Meta.value).where(Meta.key == "format_version"))
        except DatabaseError as exc:
            raise AtlasError(f"{self.root / DB_NAME} is not an atlas index: {exc.orig}") from exc
        if found != str(FORMAT_VERSION):
            raise AtlasError(f"atlas {self.root} has format version {found}, this atlascope reads {FORMAT_VERSION}")

    # -- blobs ---------------------------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        return self.blobs_dir / sha256[:2] / sha256

    def put_blob(self, data: bytes) -> str:
        """Store bytes under their sha256 (atomically; a no-op if present) and return the hash."""
        digest = hashlib.sha256(data).hexdigest()
        final = self.blob_path(digest)
        if final.exists():
            return digest
        final.parent.mkdir(exist_ok=True)
        tmp = self.tmp_dir / f"{digest}.{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        return digest
