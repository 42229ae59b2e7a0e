"""The tiny LMs' corpus: Python source that exists offline, split into training and held-out text by file.

Files come from the running interpreter's standard library (all of it, without its ``site-packages``) and a hash
sample of the pure-Python files of installed packages (``purelib``: ~200 MB here, dominated by torch, sympy and
scipy, so one file in ``SITE_PACKAGES_SAMPLE`` is taken). A file is named ``stdlib/json/decoder.py`` or
``site-packages/torch/nn/functional.py``. Sampling and the split are pure functions of that name, so a file's fate
does not depend on which other files exist; exact duplicates (vendored copies) keep only their first name, so
held-out text does not reappear in training.

    python -m precompute.lm.corpus stats      # files and bytes per split, the corpus hash
    python -m precompute.lm.corpus shards     # encode the training split into the token cache
    python -m precompute.lm.corpus heldout    # rewrite precompute/organisms/tinylm_heldout.{npz,json}
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

from precompute.lm import tokenizer as tokenizing

Split = Literal["train", "heldout"]
MAX_BYTES = 512 * 1024  # larger files are generated tables and data, not code anyone writes
MIN_CHARS = 128  # non-blank characters; fewer is an empty __init__.py or a one-line re-export
SITE_PACKAGES_SAMPLE = 1 / 8  # of site-packages files, so the corpus is tens of MB
HELDOUT_FRACTION = 0.05
HELDOUT_TOKENS = 2**18
ORGANISMS = Path(__file__).resolve().parents[1] / "organisms"
HELDOUT_PATH = ORGANISMS / "tinylm_heldout.npz"


def name_unit(name: str, purpose: str) -> float:
    """A uniform number in [0, 1) fixed by ``name`` alone; ``purpose`` keeps the draws for different rules apart."""
    digest = hashlib.sha256(f"{purpose}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_heldout(name: str) -> bool:
    return name_unit(name, "heldout") < HELDOUT_FRACTION


def is_sampled(name: str) -> bool:
    return name.startswith("stdlib/") or name_unit(name, "sample") < SITE_PACKAGES_SAMPLE


@dataclass(frozen=True)
class SourceFile:
    name: str  # e.g. stdlib/json/decoder.py
    path: Path
    size: int  # bytes
    sha256: str  # of the bytes

    @property
    def split(self) -> Split:
        return "heldout" if is_heldout(self.name) else "train"


@dataclass(frozen=True)
class Corpus:
    files: tuple[SourceFile, ...]  # sorted by name

    @property
    def hash(self) -> str:
        """sha256 over the sorted ``name\\tsha256(content)`` lines: names both the file list and the text."""
        lines = "".join(f"{f.name}\t{f.sha256}\n" for f in self.files)
        return hashlib.sha256(lines.encode()).hexdigest()

    def split(self, which: Split) -> list[SourceFile]:
        return [f for f in self.files if f.split == which]

    def documents(self, which: Split) -> Iterator[tuple[str, str]]:
        """(name, text) of each file of a split, in name order; raises if a file changed since ``discover``."""
        for f in self.split(which):
            yield f.name, _read(f)

    def describe(self, which: Split) -> str:
        files = self.split(which)
        return f"{which}: {len(files)} files, {sum(f.size for f in files):,} bytes"


def _read(f: SourceFile) -> str:
    data = f.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != f.sha256:
        raise RuntimeError(f"{f.path} changed since the corpus was discovered")
    return data.decode("utf-8")


def _python_files(root: Path, prefix: str, skip: Path) -> Iterator[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(root):  # no symlinked directories: each file once
        dirnames[:] = sorted(d for d in dirnames if Path(dirpath, d) != skip and d != "__pycache__")
        for filename in sorted(filenames):
            if filename.endswith(".py"):
                path = Path(dirpath, filename)
                yield f"{prefix}/{path.relative_to(root).as_posix()}", path


def _accept(path: Path) -> str | None:
    """The file's sha256 if it belongs in the corpus: a regular UTF-8 file of sensible size."""
    if not path.is_file() or path.stat().st_size > MAX_BYTES:
        return None
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if sum(not c.isspace() for c in text) < MIN_CHARS or "\0" in text:
        return None
    return hashlib.sha256(data).hexdigest()


def discover() -> Corpus:
    """The corpus of this interpreter and environment (reads every sampled file once: a few seconds)."""
    paths = sysconfig.get_paths()
    stdlib, purelib = Path(paths["stdlib"]), Path(paths["purelib"])
    candidates = [*_python_files(stdlib, "stdlib", stdlib / "site-packages"),
                  *_python_files(purelib, "site-packages", stdlib / "site-packages")]
    files, seen = [], set()
    for name, path in sorted(candidates):
        if not is_sampled(name) or (digest := _accept(path)) is None or digest in seen:
            continue
        seen.add(digest)
        files.append(SourceFile(name, path, path.stat().st_size, digest))
    return Corpus(tuple(files))


def _encode_documents(tok: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Each text's ids followed by ``<|endoftext|>``, as uint16 arrays (batch encoding runs on all cores)."""
    eot = tokenizing.eot_id(tok)
    return [np.array([*e.ids, eot], dtype=np.uint16) for e in tok.encode_batch(texts, add_special_tokens=False)]


def cache_root() -> Path:
    return Path(os.environ.get("ATLASCOPE_CACHE", Path.home() / ".cache" / "atlascope")) / "lm"


def train_tokens(corpus: Corpus | None = None, tokenizer_path: Path = tokenizing.DEFAULT_PATH,
                 verbose: bool = True) -> np.memmap:
    """The training split as one flat uint16 array [n_tokens], each document followed by ``<|endoftext|>``.

    Cached under ``$ATLASCOPE_CACHE/lm/<corpus hash>-<tokenizer hash>/train.u16`` (raw little-endian uint16), so a
    second call only maps the file."""
    corpus = corpus or discover()
    path = cache_root() / f"{corpus.hash[:16]}-{tokenizing.tokenizer_hash(tokenizer_path)[:16]}" / "train.u16"
    if not path.exists():
        start = time.perf_counter()
        tok = tokenizing.load_tokenizer(tokenizer_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        docs = list(corpus.documents("train"))
        n = 0
        with open(tmp, "wb") as out:
            for i in range(0, len(docs), 512):  # bounded memory: ~512 files of ids at a time
                for ids in _encode_documents(tok, [text for _, text in docs[i:i + 512]]):
                    out.write(ids.astype("<u2").tobytes())
                    n += len(ids)
        tmp.rename(path)
        if verbose:
            print(f"encoded {corpus.describe('train')} into {n:,} tokens in {time.perf_counter() - start:.1f}s")
    tokens = np.memmap(path, dtype="<u2", mode="r")
    if verbose:
        print(f"{path}: {len(tokens):,} tokens")
    return tokens


@dataclass(frozen=True)
class HeldOut:
    tokens: np.ndarray  # uint16 [HELDOUT_TOKENS]
    documents: list[tuple[str, int]]  # (name, start offset in tokens), by start; the last one may be cut off
    meta: dict  # corpus and tokenizer hashes, how it was made

    def document_at(self, offset: int) -> str:
        """The name of the document that token ``offset`` belongs to."""
        if not 0 <= offset < len(self.tokens):
            raise IndexError(offset)
        starts = [start for _, start in self.documents]
        return self.documents[int(np.searchsorted(starts, offset, side="right")) - 1][0]


def make_heldout(corpus: Corpus, tok: Tokenizer) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """``HELDOUT_TOKENS`` tokens of held-out documents taken in the order of a hash of their names (a sample across
    packages, fixed by the names), each followed by ``<|endoftext|>``; the last is cut at the length."""
    files = sorted(corpus.split("heldout"), key=lambda f: name_unit(f.name, "heldout-order"))
    pieces, documents, n = [], [], 0
    for i in range(0, len(files), 64):
        batch = files[i:i + 64]
        for f, ids in zip(batch, _encode_documents(tok, [_read(f) for f in batch])):
            documents.append((f.name, n))
            pieces.append(ids[:HELDOUT_TOKENS - n])
            n += len(pieces[-1])
            if n == HELDOUT_TOKENS:
                return np.concatenate(pieces), documents
    raise RuntimeError(f"the held-out split has only {n} tokens, fewer than {HELDOUT_TOKENS}")


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (loadable by ``np.load``) whose bytes depend on the arrays only: ``np.savez`` stamps the time."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue(),
                             compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def write_heldout(path: Path = HELDOUT_PATH, tokenizer_path: Path = tokenizing.DEFAULT_PATH) -> HeldOut:
    corpus = discover()
    tokens, documents = make_heldout(corpus, tokenizing.load_tokenizer(tokenizer_path))
    names, starts = zip(*documents)
    path.write_bytes(_npz_bytes({"tokens": tokens, "names": np.array(names), "starts": np.array(starts, np.int64)}))
    meta = {
        "corpus_hash": corpus.hash,
        "tokenizer_sha256": tokenizing.tokenizer_hash(tokenizer_path),
        "tokens": HELDOUT_TOKENS,
        "documents": len(documents),
        "corpus": {split: {"files": len(corpus.split(split)), "bytes": sum(f.size for f in corpus.split(split))}
                   for split in ("train", "heldout")},
        "python": sys.version.split()[0],
        "made_by": "python -m precompute.lm.corpus heldout",
        "method": f"with u(x) = first 8 bytes of sha256(x) / 2**64: held-out files (u('heldout\\0'+name) < "
                  f"{HELDOUT_FRACTION}) in the order of u('heldout-order\\0'+name), each followed by <|endoftext|>, "
                  f"cut at {HELDOUT_TOKENS} tokens; corpus: stdlib and site-packages files with "
                  f"u('sample\\0'+name) < {SITE_PACKAGES_SAMPLE}, UTF-8, <= {MAX_BYTES} bytes, "
                  f">= {MIN_CHARS} non-blank characters, exact duplicates dropped",
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return load_heldout(path)


def load_heldout(path: Path = HELDOUT_PATH) -> HeldOut:
    """The committed held-out sample: held-out loss and LM examples use it, whatever Python is installed here."""
    with np.load(path, allow_pickle=False) as archive:
        tokens, names, starts = archive["tokens"], archive["names"], archive["starts"]
    meta = json.loads(path.with_suffix(".json").read_text())
    return HeldOut(tokens, [(str(n), int(s)) for n, s in zip(names, starts)], meta)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m precompute.lm.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["stats", "shards", "heldout"])
    args = parser.parse_args()
    if args.command == "heldout":
        held = write_heldout()
        print(f"wrote {HELDOUT_PATH}: {len(held.tokens):,} tokens from {len(held.documents)} documents")
        return
    corpus = discover()
    print(f"corpus {corpus.hash}\n{corpus.describe('train')}\n{corpus.describe('heldout')}")
    if args.command == "shards":
        train_tokens(corpus)


if __name__ == "__main__":
    main()
