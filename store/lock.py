"""One writer per atlas, visible to readers: an advisory ``flock`` on the atlas directory itself.

The directory, because it exists before anything in it, keeps its inode while the job replaces files, and opens
read-only: a server on a read-only mount can still probe it, and neither side creates or writes a file to lock. The
kernel drops the lock when its holder exits, kill -9 included, so a dead job never leaves a stale lock behind.

Readers probe with a shared lock that they drop at once; a writer that must not wait therefore retries for a moment
before it takes a busy lock for another writer.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from store.errors import AtlasError

PROBE_GRACE_SECONDS = 0.3  # far longer than a reader's probe holds its shared lock


@contextmanager
def writer_lock(root: Path, wait: bool = True, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold the writer lock of the atlas directory ``root`` (which must exist) for the block. If another writer holds
    it: call ``on_wait`` and wait for it, or with ``wait=False`` raise AtlasError."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if not _lock_within_grace(fd):
            if not wait:
                raise AtlasError(f"another atlascope precompute is writing to {root}; let it finish, or drop "
                                 f"--no-wait to start when it does")
            on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock_within_grace(fd: int) -> bool:
    deadline = time.monotonic() + PROBE_GRACE_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def writer_active(root: Path) -> bool:
    """Whether a precompute job holds the writer lock of ``root`` now. Creates and writes nothing, works on a
    read-only directory, costs a few system calls; False when ``root`` cannot be opened."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
