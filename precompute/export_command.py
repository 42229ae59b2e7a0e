"""``atlascope export static|parquet DIR --atlas ATLAS``: the atlas taken away, without torch.

An export is written into a hidden folder beside ``DIR`` and renamed to ``DIR`` when complete, so ``DIR`` is either
the whole export or as it was (absent or empty): a refused, failed or interrupted export loses nothing, and the atlas
is only read. Bad input (an unknown format, a ``DIR`` that is a file or not empty, no atlas, a damaged one, pyarrow
missing for Parquet) exits with code 2 before anything is written.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

FORMATS = {"static": "the site as files a static host serves at the same URLs",
           "parquet": "tables for pandas and DuckDB, and each circuit's circuit-tracer JSON"}


def _target_problem(directory: Path) -> str | None:
    if directory.is_dir():
        if any(directory.iterdir()):
            return f"{directory} is not empty: export into a new or empty directory (nothing was written)"
        return None
    if directory.exists() or directory.is_symlink():
        return f"{directory} exists and is not a directory: export into a new or empty directory"
    return None


def _static(atlas_dir: Path, out: Path, progress: Callable[[int, int], None]) -> str:
    from rich.markup import escape

    from precompute.cli import err, fail
    from server.app import create_app
    from server.export.site import export_site

    app = create_app(atlas_dir)
    check = app.state.check
    if check.problem or check.pending:  # a damaged index would export error pages; a busy one, none yet
        raise fail(f"{check.problem or check.pending.message}; nothing exported")
    problems = export_site(app, out, progress)
    for problem in problems:
        err.print(f"[bold yellow]warning:[/] a linked page did not answer 200, so the export lacks it: "
                  f"{escape(problem)}", highlight=False)
    files = sum(1 for path in out.rglob("*") if path.is_file() and not path.is_relative_to(out / "static"))
    return f"{files:,} files (pages, twins, assets) and static/"


def _parquet(atlas_dir: Path, out: Path, progress: Callable[[int, int], None]) -> str:
    from server.export.tables import export_tables
    from store import Atlas

    counts = export_tables(Atlas.open_readonly(atlas_dir), out, progress)
    return ", ".join(f"{name}.parquet {rows:,} rows" for name, rows in counts.items())


EXPORTS = {"static": _static, "parquet": _parquet}


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """``progress(done, total)`` for an export: a live bar on a terminal; in a log (a pipe, a file) a plain line at
    least every ``PLAIN_EVERY`` seconds and at the end, as a precompute run reports (``precompute.reporting``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from precompute.cli import err
    from precompute.reporting import PLAIN_EVERY

    if err.is_terminal:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err) as bar:
            task = bar.add_task(label)
            yield lambda done, total: bar.update(task, completed=done, total=total)
        return
    started = last = time.monotonic()

    def plain(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PLAIN_EVERY or done == total:
            last = now
            err.print(f"{label}: {done:,} of {total:,} · {int(now - started) // 60}:{int(now - started) % 60:02d}",
                      markup=False, highlight=False)

    yield plain


def main(
    format: str = typer.Argument(..., metavar="FORMAT", help="static (the site as files a static host serves at the "
                                                              "same URLs) or parquet (tables for pandas and DuckDB)."),
    directory: Path = typer.Argument(..., metavar="DIR", help="Where to write it: a new or empty directory."),
    atlas: Path = typer.Option(..., "--atlas", help="Atlas directory to export (only read)."),
) -> None:
    """Export the atlas as a static site or as Parquet tables, into a new or empty directory. Needs no torch;
    Parquet needs pyarrow (pip install 'atlascope[export]')."""
    from rich.markup import escape

    from precompute.cli import _atlas_failures, err, fail
    from store import Atlas
    from store.lock import writer_active

    if format not in FORMATS:
        raise fail(f"unknown export format {format!r}: " + "; ".join(f"{name} ({what})" for name, what in
                                                                   FORMATS.items()))
    if problem := _target_problem(directory):
        raise fail(problem)
    if format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise fail("export parquet needs pyarrow: pip install 'atlascope[export]'") from None
    with _atlas_failures(atlas):
        Atlas.open_readonly(atlas).engine.dispose()  # no atlas, a foreign or older one: refused before writing
    if writer_active(atlas):
        err.print(f"[bold yellow]warning:[/] a precompute is writing to {escape(str(atlas))}: the export holds what "
                  "each page read when it read it", highlight=False)
    target = directory.absolute()
    partial = target.parent / f".{target.name}.export-{os.getpid()}"
    try:
        partial.mkdir(parents=True)
    except OSError as exc:
        raise fail(f"cannot write beside {directory}: {exc.strerror} ({exc.filename})") from None
    counted = "pages" if format == "static" else "layers and circuits"
    try:
        with _atlas_failures(atlas), _progress(f"export {format}: {counted}") as progress:  # _atlas_failures: reading
            try:
                summary = EXPORTS[format](atlas, partial, progress)
            except OSError as exc:  # writing the export: a full disk, a read-only directory
                raise fail(f"cannot write {directory}: {exc.strerror or exc}") from None
        os.replace(partial, target)  # a new name, or onto the empty directory
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    err.print(f"exported {atlas} as {format} into {directory}: {summary}", highlight=False)
