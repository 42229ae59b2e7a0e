"""Find a registered model's published weights, offline first, and check them.

Looked for, in order: ``--weights PATH`` (the file, or a directory holding it), ``$ATLASCOPE_WEIGHTS_DIR/<file>``,
torch's hub cache (``<torch.hub.get_dir()>/checkpoints/<file>``, where torchvision and lucent download to) and, for
weights on Hugging Face (timm's), its cache. Only when none has the file, and the network answers, is it downloaded
with the publisher's own mechanism (torch hub, Hugging Face hub); ``ATLASCOPE_OFFLINE=1`` forbids that. Otherwise the
error names the file, its URL and where to put it: there is never a silent fallback to random weights.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from precompute.registry import ModelSpec, WeightSource, WeightsError
from store.keys import CardKey

WEIGHTS_DIR = "ATLASCOPE_WEIGHTS_DIR"
OFFLINE = "ATLASCOPE_OFFLINE"
HF_FILE = "model.safetensors"  # the file a timm repository on Hugging Face holds


@dataclass(frozen=True)
class Found:
    path: Path
    sha256: str
    how: str  # "--weights", "$ATLASCOPE_WEIGHTS_DIR", "torch hub cache", "Hugging Face cache", "downloaded"

    def card(self, source: WeightSource) -> dict:
        """What goes on the model's card (``weights``), so pages and images say which file made them."""
        return {"file": self.path.name, "sha256": self.sha256, "url": source.url, "found": self.how,
                "checked": bool(source.sha256), "format": source.format, "random": False,
                **({"note": source.note} if source.note else {})}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_dir() -> Path:
    return Path(os.environ.get(WEIGHTS_DIR) or Path.home() / ".cache" / "atlascope" / "weights")


def _hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _hf_cached(source: WeightSource) -> Path | None:
    if not source.hf_repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source.hf_repo, HF_FILE)
    return Path(cached) if isinstance(cached, str) else None


def places(source: WeightSource) -> list[tuple[str, Path | None]]:
    """Where the file is looked for, in order, without --weights."""
    return [("$ATLASCOPE_WEIGHTS_DIR", _weights_dir() / source.file),
            ("torch hub cache", _hub_checkpoints() / source.file),
            *([("Hugging Face cache", _hf_cached(source))] if source.hf_repo else [])]


def no_network(url: str) -> str | None:
    """Why the publisher cannot be reached (None: it answers), in a few seconds at most."""
    if os.environ.get(OFFLINE, "") not in ("", "0"):
        return f"{OFFLINE} is set"
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as exc:
        return f"{host} cannot be reached ({exc.__class__.__name__}: {exc})"
    return None


def _checked(path: Path, source: WeightSource, slug: str, how: str) -> Found:
    sha = sha256_of(path)
    if source.sha256 and not sha.startswith(source.sha256.lower()):
        raise WeightsError(f"{slug}: weights at {path} have sha256 {sha}, not the published {source.sha256}…: a "
                           f"different or damaged file. Download {source.file} again from {source.url}")
    return Found(path, sha, how)


def _download(source: WeightSource) -> Path:
    if source.hf_repo:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(source.hf_repo, HF_FILE))
    import torch

    target = _hub_checkpoints() / source.file
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(source.url, str(target), progress=True)
    return target


def find(spec: ModelSpec, given: Path | None = None) -> Found:
    """The model's weights file, checked against the publisher's sha256 where there is one."""
    source = spec.weights_source
    if source is None:
        raise WeightsError(f"{spec.slug} has no published weights to look for")
    if given is not None:
        path = given / source.file if given.is_dir() else given
        if not path.is_file():
            raise WeightsError(f"{spec.slug}: --weights {given}: no file {path}. It is {source.file}, from "
                               f"{source.url}")
        return _checked(path, source, spec.slug, "--weights")
    looked = places(source)
    for how, path in looked:
        if path is not None and path.is_file():
            return _checked(path, source, spec.slug, how)
    reason = no_network(source.url)
    if reason is None:
        return _checked(_download(source), source, spec.slug, "downloaded")
    where = "; ".join(f"{path}" for _, path in looked if path is not None)
    raise WeightsError(
        f"{spec.slug}: weights file {source.file} not found and not downloaded ({reason}). Download it from "
        f"{source.url} and put it at {_weights_dir() / source.file} (or set ${WEIGHTS_DIR} to its folder, or pass "
        f"--weights PATH). Looked in: {where}. For an untrained model with the same architecture, labelled as "
        f"such, pass --random-weights.")


def resolved(spec: ModelSpec, given: Path | None, random_weights: bool, seed: int = 0) -> ModelSpec:
    """A registered organism ready to load: with its checked weights file (``find``), or, asked for explicitly,
    seeded random weights under its own slug (``inceptionv1-random``), so an untrained model never shares pages, or
    Microscope's links, with the trained one. Its card says which, with its input preprocessing."""
    card = {CardKey.INPUT: spec.preprocess.describe()} if spec.preprocess else {}
    if random_weights:
        return replace(spec, slug=f"{spec.slug}-random", title=f"{spec.title} (untrained)", random_weights=True,
                       seed=seed, microscope=None, card_data={**card, CardKey.WEIGHTS: {
                           "random": True, "seed": seed,
                           "note": "untrained: seeded random weights (--random-weights), no learned features"}})
    found = find(spec, given)
    return replace(spec, weights=found.path, card_data={
        **card, CardKey.WEIGHTS: found.card(spec.weights_source),
        **({CardKey.MICROSCOPE: {"slug": spec.microscope}} if spec.microscope else {})})
