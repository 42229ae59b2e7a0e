"""Where an atlas keeps its blobs: the ``blobs/`` folder of its directory (the default), or an object store named by an
fsspec URL (``s3://bucket/prefix``, any S3-compatible store), so that writers on other machines can put images where
every reader finds them while the index stays one local SQLite file.

Both lay blobs out alike, ``<sha256[:2]>/<sha256>`` under their root, and hand out a blob's place as an object with the
part of ``pathlib.Path`` the atlas uses (``name``, ``read_bytes``, ``exists``, ``unlink``, ``str``): a local blob *is*
a Path, so a local atlas is read and written exactly as before there were two kinds. fsspec and its S3 driver are
imported only for an atlas whose index names a URL, so the base install serves local atlases without them.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol
from urllib.parse import urlsplit

from store.errors import AtlasError

# The ``meta`` row naming the URL of an atlas's blobs; an atlas without it keeps them in its ``blobs/`` folder.
BLOBS_KEY = "blobs"
BLOBS_DIR = "blobs"
INSTALL_HINT = "pip install 'atlascope[s3]'"


class Blob(Protocol):
    """One blob's place, named by its sha256."""

    @property
    def name(self) -> str: ...

    def read_bytes(self) -> bytes: ...  # FileNotFoundError if it is not there

    def exists(self) -> bool: ...

    def unlink(self, missing_ok: bool = False) -> None: ...


class BlobStore(Protocol):
    location: str  # the folder or URL, for messages

    def blob(self, sha256: str) -> Blob: ...

    def blobs(self) -> list[Blob]:
        """Everything stored in the blob layout (``xx/name``), whether an asset names it or not."""

    def write(self, sha256: str, data: bytes) -> None:
        """Store ``data`` as the blob ``sha256`` whole or not at all: never a partial blob under a real name."""

    def prepare(self) -> None:
        """Make the store ready for a writer, or raise AtlasError saying why it cannot be written."""


def blob_store(url: str | None, directory: Path, tmp: Path) -> BlobStore:
    """Where an atlas keeps its blobs: its ``directory`` (written through ``tmp``), or the object store at ``url``."""
    return LocalBlobs(directory, tmp) if url is None else RemoteBlobs(url)


def _key(sha256: str) -> str:
    return f"{sha256[:2]}/{sha256}"


class LocalBlobs:
    """The atlas directory's ``blobs/``: a blob is written to ``tmp/`` and renamed into place, so a killed writer
    never leaves a half-written file under a real name."""

    def __init__(self, directory: Path, tmp: Path):
        self.directory, self.tmp = directory, tmp
        self.location = str(directory)

    def blob(self, sha256: str) -> Path:
        return self.directory / _key(sha256)

    def blobs(self) -> list[Path]:
        return [path for path in self.directory.glob("*/*") if path.is_file()]

    def write(self, sha256: str, data: bytes) -> None:
        final = self.blob(sha256)
        final.parent.mkdir(exist_ok=True)
        tmp = self.tmp / f"{sha256}.{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def prepare(self) -> None:
        self.directory.mkdir(exist_ok=True)


@dataclass(frozen=True)
class RemoteBlob:
    """A blob in an object store, equal to another of the same key (``Atlas.stray_blobs`` compares places)."""

    key: str  # the filesystem's path: bucket/prefix/xx/sha256
    fs: Any = field(compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.key.rpartition("/")[2]

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.key, start=0)  # one ranged GET; a plain read asks for the size first

    def exists(self) -> bool:
        return self.fs.exists(self.key)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def __str__(self) -> str:
        return self.fs.unstrip_protocol(self.key)


class RemoteBlobs:
    """An fsspec URL. An object store's PUT makes an object whole or not at all, so a blob is written in one call.
    Endpoint and credentials come from the driver's usual settings (for S3: ``AWS_ENDPOINT_URL``,
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, or fsspec's config)."""

    def __init__(self, url: str):
        self.location = url.rstrip("/")  # one spelling of a place, as the index records it
        if "://" not in url:
            raise AtlasError(f"blobs location {url!r} is not a URL such as s3://bucket/prefix (an atlas keeps its "
                             f"blobs in its own blobs/ folder unless given one)")
        try:
            from fsspec.core import url_to_fs
        except ImportError:
            raise AtlasError(f"blobs at {url} need fsspec: {INSTALL_HINT}") from None
        try:
            self.fs, self.root = url_to_fs(url)
        except ValueError as exc:  # fsspec: "Protocol not known: ..."
            raise AtlasError(f"blobs at {url}: {exc}; use an fsspec URL such as s3://bucket/prefix") from None
        except ImportError as exc:  # the protocol's driver (s3fs for s3://) is not installed
            raise AtlasError(f"blobs at {url}: {exc} ({INSTALL_HINT})") from None
        self.root = self.root.rstrip("/")

    def blob(self, sha256: str) -> RemoteBlob:
        return RemoteBlob(f"{self.root}/{_key(sha256)}", self.fs)

    def blobs(self) -> list[RemoteBlob]:
        with self._reaching():
            keys = self.fs.find(self.root)  # one flat listing, not one per xx/ "folder"
        prefix = f"{self.root}/"
        return [RemoteBlob(key, self.fs) for key in keys
                if key.startswith(prefix) and key[len(prefix):].count("/") == 1]

    def write(self, sha256: str, data: bytes) -> None:
        self.fs.pipe_file(self.blob(sha256).key, data)

    def prepare(self) -> None:
        """That the bucket is there and answers (the prefix need not exist yet: object stores have no folders)."""
        bucket = urlsplit(self.location).netloc or self.root
        with self._reaching():
            self.fs.info(bucket)

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """Whatever the driver raises for a store that is not there or does not answer, as one AtlasError."""
        try:
            yield
        except FileNotFoundError:
            raise AtlasError(f"blobs at {self.location}: there is no bucket {urlsplit(self.location).netloc!r} "
                             f"(create it first)") from None
        except Exception as exc:  # noqa: BLE001 - each driver has its own errors for a store it cannot reach
            raise AtlasError(f"blobs at {self.location} cannot be reached: {type(exc).__name__}: {exc}") from None
