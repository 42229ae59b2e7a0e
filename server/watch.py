"""When the atlas changes: the token that keys every cached page and ETag.

An atlas changes only when a job commits to it. In rollback-journal mode (the only mode the job uses) SQLite bumps the
*file change counter* in the database header (bytes 24-27, big-endian) with every commit, so reading four bytes tells
a worker whether anything it cached may be stale: no query, no lock, about a microsecond. The counter is read before a
page is built, so a page is never cached under a token newer than its data.

Whether a job is running right now changes without a commit when a job dies (kill -9), and pages say whether one is
running, so the writer's lock is part of the token too; probing it costs a few system calls, so it is done at most
every ``WRITER_PROBE_SECONDS``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from store.lock import writer_active

CHANGE_COUNTER = slice(24, 28)  # SQLite file format: "file change counter", big-endian uint32
WRITER_PROBE_SECONDS = 1.0


class AtlasWatch:
    def __init__(self, root: Path, db: Path):
        self.root = root
        self._fd = os.open(db, os.O_RDONLY)
        self._writer = False
        self._probed_at = float("-inf")

    def change_counter(self) -> int:
        header = os.pread(self._fd, 28, 0)
        return int.from_bytes(header[CHANGE_COUNTER], "big") if len(header) == 28 else 0

    def writer_active(self) -> bool:
        now = time.monotonic()
        if now - self._probed_at >= WRITER_PROBE_SECONDS:
            self._writer, self._probed_at = writer_active(self.root), now
        return self._writer

    def token(self) -> tuple[int, bool]:
        return self.change_counter(), self.writer_active()

    def close(self) -> None:
        os.close(self._fd)
