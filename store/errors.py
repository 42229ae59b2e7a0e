"""What went wrong with an atlas, in one sentence a person can act on.

The job (writer) and the server (reader) meet the same failures from their environment: a damaged or foreign index,
a full disk, a read-only file system, missing permissions. SQLite reports them as ``sqlite3`` errors (wrapped by
SQLAlchemy), the file system as ``OSError``. Both sides classify them here, so the job's ``error:`` line and the
server's 503 say the same thing.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import DBAPIError

DAMAGED = "damaged"  # the index is not a readable SQLite database of an atlas
BUSY = "busy"  # another connection holds a lock longer than we wait; trying again later works
FULL = "full"  # no space left on the device
READ_ONLY = "read-only"  # a read-only file, directory or file system
DENIED = "denied"  # missing permissions
INTERRUPTED = "interrupted"  # a writer died mid-commit: its journal must be rolled back, which readers cannot do
UNAVAILABLE = "unavailable"  # anything else the environment did

_SQLITE_KINDS = {
    "SQLITE_CORRUPT": DAMAGED, "SQLITE_NOTADB": DAMAGED, "SQLITE_FORMAT": DAMAGED,
    "SQLITE_BUSY": BUSY, "SQLITE_LOCKED": BUSY,
    "SQLITE_FULL": FULL,
    "SQLITE_READONLY_ROLLBACK": INTERRUPTED,  # before SQLITE_READONLY, which it starts with
    "SQLITE_READONLY": READ_ONLY,
    "SQLITE_PERM": DENIED, "SQLITE_AUTH": DENIED,
}
_ERRNO_KINDS = {
    errno.ENOSPC: FULL, errno.EDQUOT: FULL, errno.EFBIG: FULL,
    errno.EROFS: READ_ONLY,
    errno.EACCES: DENIED, errno.EPERM: DENIED,
}


class AtlasError(Exception):
    """The directory is not a usable atlas: missing, damaged, foreign, of another format version, or being written."""


class AtlasUnreadable(AtlasError):
    """An atlas index that SQLite cannot read now: busy (a writer's lock), interrupted (a hot journal) or damaged.
    ``failure`` says which. A server starts anyway and answers 503 until it can read it; the job refuses it."""

    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


@dataclass(frozen=True)
class Failure:
    kind: str  # one of the constants above
    message: str  # one line: what is wrong and what to do


def classify(exc: BaseException, atlas: Path | str) -> Failure | None:
    """The failure behind ``exc`` when it came from the atlas's environment (SQLite or the file system), else None."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(cause, sqlite3.Error):
        name = getattr(cause, "sqlite_errorname", "") or ""
        kind = next((k for prefix, k in _SQLITE_KINDS.items() if name.startswith(prefix)), UNAVAILABLE)
        return Failure(kind, describe(kind, atlas, str(cause)))
    if isinstance(cause, OSError):
        kind = _ERRNO_KINDS.get(cause.errno, UNAVAILABLE)
        where = cause.filename or atlas
        return Failure(kind, describe(kind, where, cause.strerror or str(cause)))
    return None


def unwritable(path: Path) -> Failure | None:
    """Why the writer could not write ``path`` (an existing file or directory of the atlas), found before it writes
    anything; None if it can, or if ``path`` does not exist yet."""
    if not path.exists() or os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0)):
        return None
    mode = stat.filemode(path.stat().st_mode)
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        return Failure(READ_ONLY, describe(READ_ONLY, path, "read-only file system"))
    if "w" not in mode:
        return Failure(READ_ONLY, describe(READ_ONLY, path, f"mode {mode}"))
    return Failure(DENIED, describe(DENIED, path, f"mode {mode}, not writable by uid {os.getuid()}"))


def describe(kind: str, where: Path | str, detail: str) -> str:
    """The sentence for a failure of ``kind`` at ``where``: what is wrong and what to do about it."""
    return {
        DAMAGED: f"the atlas index at {where} is damaged ({detail}); `atlascope verify --atlas DIR` lists what is "
                 f"wrong, and moving the directory aside starts a new atlas",
        BUSY: f"the atlas at {where} is busy ({detail}); another process holds it, try again shortly",
        FULL: f"no space left to write the atlas at {where} ({detail}); free some space and run the same command "
              f"again",
        READ_ONLY: f"the atlas at {where} is read-only ({detail}); write to a copy or another --atlas directory",
        DENIED: f"permission denied for {where} ({detail}); choose a directory you can write to",
        INTERRUPTED: f"a precompute writing to the atlas at {where} was killed in the middle of a commit ({detail}); "
                     f"the next `atlascope precompute` into it rolls that commit back, and until then it cannot be "
                     f"read",
        UNAVAILABLE: f"the atlas at {where} could not be used ({detail})",
    }[kind]
