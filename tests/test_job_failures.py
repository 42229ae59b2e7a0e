"""What the environment can do to a precompute: a path that is a file, a damaged or foreign index, missing
permissions, a full disk, another writer. Each ends in one `error:` line and exit code 2, with the atlas byte for byte
as it was; a batch that fails midway leaves neither rows nor blobs."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from store import Atlas
from store.schema import Asset
from tests.conftest import ATLASCOPE, SMALL_DATASET
from tests.damage import foreign_index, garbage_index, partly_garbage_index, snapshot, truncated_index

# Something left to render in the short atlas, so a check that let the run through would change it.
WORK = ["tinyvision", "--layers", "conv3", "--units", "0-7", "--steps", "8", "--batch-size", "2", "--dataset",
        str(SMALL_DATASET), "--device", "cpu"]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is 0700), for runs as a user bound by permissions."""
    path = Path(tempfile.mkdtemp(prefix="atlascope-failures-"))
    path.chmod(0o755)
    yield path
    for sub, dirs, _ in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(sub, name), 0o755)
    shutil.rmtree(path)


def unprivileged() -> list[str]:
    """A command prefix under which the CLI obeys permission bits, which root ignores. Tests run as root here and in
    CI. uid 65534 is the natural choice, but it can only run our interpreter if every directory up to it is open to
    others; where not (here it lives under /root, mode 0700), root without the capabilities that bypass permission
    checks (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) obeys them just the same, on files it owns."""
    if os.geteuid() != 0:
        return []
    try:
        subprocess.run([sys.executable, "-c", "import precompute.cli"], user=65534, group=65534, extra_groups=[],
                       cwd="/", capture_output=True, check=True)
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    except (OSError, subprocess.CalledProcessError):
        pass
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop the capabilities that ignore permission bits")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]


def as_unprivileged(atlas: Path) -> list[str]:
    """``unprivileged()``, with ``atlas`` handed to that user, and a skip where permission bits bind nobody."""
    prefix = unprivileged()
    if "--reuid=65534" in prefix:
        for sub, dirs, files in os.walk(atlas):
            for name in [sub, *(os.path.join(sub, n) for n in dirs + files)]:
                os.chown(name, 65534, 65534)
    if not prefix:
        probe = atlas.parent / "probe"
        probe.mkdir(mode=0o555)
        try:
            (probe / "x").touch()
            pytest.skip("not root, and a 0555 directory is writable here: permission bits have no effect")
        except PermissionError:
            pass
    return prefix


def precompute(atlas: Path | str, *extra: str, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *ATLASCOPE, "precompute", *WORK, "--atlas", str(atlas), *extra],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_COLOR": "1"})


def assert_refused(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr) < 2000


DAMAGE: dict[str, tuple[Callable[[Path], str], str]] = {
    "garbage": (garbage_index, "is damaged (file is not a database)"),
    "truncated": (truncated_index, "is damaged"),
    "partly-garbage": (partly_garbage_index, "is damaged"),
    "foreign": (foreign_index, "is not an atlas index but another SQLite database (tables: notes)"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_or_foreign_index_is_refused(atlas_dir: Path, tmp_path: Path, damage: str):
    atlas = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas)
    harm, message = DAMAGE[damage]
    harm(atlas)
    before = snapshot(atlas)
    assert_refused(precompute(atlas), message)
    assert snapshot(atlas) == before


def test_an_empty_index_file_starts_a_new_atlas(tmp_path: Path):
    (tmp_path / "atlas.db").touch()
    done = precompute(tmp_path, "--units", "0")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("under", [False, True], ids=["file", "under-a-file"])
def test_an_atlas_path_through_a_file_is_refused(tmp_path: Path, under: bool):
    file = tmp_path / "notes.txt"
    file.write_text("not a directory")
    before = snapshot(tmp_path)
    done = precompute(file / "atlas" if under else file)
    assert_refused(done, f"lies under {file}, which is a file" if under else f"--atlas {file} is a file")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("target", ["directory", "atlas.db"])
def test_a_read_only_atlas_is_refused(atlas_dir: Path, workdir: Path, target: str):
    atlas = workdir / "atlas"
    shutil.copytree(atlas_dir, atlas)
    prefix = as_unprivileged(atlas)
    path = atlas if target == "directory" else atlas / "atlas.db"
    path.chmod(0o555 if path.is_dir() else 0o444)
    before = snapshot(atlas)
    assert_refused(precompute(atlas, prefix=prefix), f"the atlas at {path} is read-only")
    assert snapshot(atlas) == before


def test_a_directory_one_cannot_create_is_refused(workdir: Path):
    parent = workdir / "parent"
    parent.mkdir(mode=0o555)
    prefix = as_unprivileged(parent)
    assert_refused(precompute(parent / "atlas", prefix=prefix), "permission denied")
    assert not any(parent.iterdir())


def test_no_wait_refuses_while_another_run_writes(atlas_dir: Path, tmp_path: Path):
    atlas = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas)
    before = snapshot(atlas)
    held = os.open(atlas, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # what a running precompute holds
    try:
        done = precompute(atlas, "--no-wait")
    finally:
        os.close(held)
    assert_refused(done, f"another atlascope precompute is writing to {atlas}")
    assert snapshot(atlas) == before


FULL_DISK = r"""
mount -t tmpfs -o size=64m tmpfs "$DISK" || exit 97
cp -a "$ATLAS" "$DISK/a" && cd "$DISK" || exit 98
snapshot() { find a -printf '%p %y\n' | sort; find a -type f -exec sha256sum {} + | sort; }
snapshot > before
dd if=/dev/zero of=filler bs=1k count=$(( $(df -k --output=avail . | tail -1) - FREE_KB )) 2>/dev/null
errors=$("$@" --atlas "$DISK/a" 2>&1 >/dev/null)
echo "exit $?"
printf '%s\n' "$errors"
if snapshot | cmp -s - before; then echo "atlas unchanged"; else echo "atlas changed"; fi
"$PYTHON" -m precompute.cli verify --atlas "$DISK/a"
"""


@pytest.mark.parametrize("free_kb", [0, 48], ids=["before-the-first-write", "while-rendering"])
def test_a_full_disk_is_reported_and_leaves_a_sound_atlas(atlas_dir: Path, tmp_path: Path, free_kb: int):
    """With no space at all the run changes nothing; with a little, it records its run and statistics, then fails
    saving a batch, which leaves neither rows nor blobs. The checks run inside the namespace that has the disk."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("needs unshare and user namespaces, to mount a tiny tmpfs without privileges")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["unshare", "-rm", "sh", "-c", FULL_DISK, "sh", *ATLASCOPE, "precompute", *WORK],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_COLOR": "1", "DISK": str(disk), "ATLAS": str(atlas_dir),
                               "FREE_KB": str(free_kb), "PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout + done.stderr  # verify's exit code: the atlas is sound
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "exit 2" and lines[-1].startswith("ok: "), done.stdout
    assert lines[-3].startswith("error: no space left to write the atlas"), done.stdout
    assert lines[-2] == ("atlas unchanged" if free_kb == 0 else "atlas changed"), done.stdout


def test_a_failed_batch_leaves_neither_rows_nor_blobs(atlas_dir: Path, tmp_path: Path):
    atlas_root = tmp_path / "atlas"
    shutil.copytree(atlas_dir, atlas_root)
    before = snapshot(atlas_root)
    with Atlas.open_for_writing(atlas_root) as atlas:
        existing = atlas.blob_files()[0]
        with pytest.raises(OSError, match="No space left"):
            with atlas.batch() as session:
                assert atlas.put_blob(existing.read_bytes()) == existing.name  # already there: kept
                sha = atlas.put_blob(b"a new image")
                session.add(Asset(sha256=sha, media_type="image/png", size=11))
                session.flush()
                raise OSError(28, "No space left on device")  # as the next write would
        assert not atlas.blob_path(sha).exists() and existing.exists()
    assert snapshot(atlas_root) == before
