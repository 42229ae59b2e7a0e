"""How a precompute run tells whoever started it how far it is: live bars on a terminal, and plain lines where its
output goes to a file or a pipe (``make demo > log``, nohup, CI), which a live display would leave empty until the
run ends.

Both take the job's callbacks (``precompute.job.run``): the plan, each stage as it starts, each saved item, a stage's
words between saves (the contexts pass's tokens, pruning's step, loss, kept nodes and k search). ``reporter`` picks
one for the console the messages go to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

PLAIN_EVERY = 30.0  # seconds: plain output prints the run's state at least this often


class Report:
    """What both kinds of report keep: the counts, the stage at work and its items, the latest words."""

    def __init__(self, console: Console, slug: str, counted: str, verb: str, device: str, atlas: Any,
                 on_ready: Callable[[], None]):
        self.console, self.slug, self.counted, self.verb, self.device, self.atlas = (
            console, slug, counted, verb, device, atlas)
        self.on_ready = on_ready
        self.todo = self.done = 0
        self.stage, self.items, self.items_done, self.stage_counted = "", 0, 0, True
        self.current = ""
        self.layer_todo: dict[str, int] = {}

    def callbacks(self) -> dict[str, Callable[..., None]]:
        """The keyword arguments of ``precompute.job.run`` that report to this."""
        return {"on_plan": self.on_plan, "on_saved": self.on_saved, "on_wait": self.on_wait,
                "on_report": self.on_report, "on_layers": self.on_layers, "on_stage": self.on_stage}

    def on_plan(self, total: int, todo: int) -> None:
        self.todo = todo
        self.say(f"{self.slug}: {total} {self.counted} planned, {total - todo} already in {self.atlas}, {todo} to "
                 f"{self.verb} on {self.device}")
        self.on_ready()

    def on_layers(self, todo: dict[str, int]) -> None:
        self.layer_todo.update(todo)

    def on_stage(self, name: str, items: int, counted: bool) -> None:
        self.stage, self.items, self.items_done, self.stage_counted = name, items, 0, counted

    def on_saved(self, label: str, saved: int) -> None:
        self.done += saved
        self.items_done += 1
        self.current = label

    def on_report(self, current: str) -> None:
        self.current = current

    def on_wait(self) -> None:
        self.say(f"waiting for another atlascope precompute writing to {self.atlas}…")

    def say(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)  # one line each, greppable

    def __enter__(self) -> Report:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class TerminalReport(Report):
    """rich's live bars: the run's counted things, a row per layer of feature visualisations (its own rate and time
    remaining), and a row for a stage that counts nothing (a language model's circuits), its items as they finish."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=self.console)
        self.task = self.progress.add_task(self.slug, total=None)
        self.rows: dict[str, Any] = {}

    def __enter__(self) -> TerminalReport:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def say(self, line: str) -> None:
        self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def on_plan(self, total: int, todo: int) -> None:
        self.progress.update(self.task, total=todo)
        super().on_plan(total, todo)

    def on_stage(self, name: str, items: int, counted: bool) -> None:
        super().on_stage(name, items, counted)
        if not counted:
            self.rows[name] = self.progress.add_task(f"  {name}", total=items)

    def on_saved(self, label: str, saved: int) -> None:
        super().on_saved(label, saved)
        self.progress.update(self.task, advance=saved, description=f"{self.slug} {label}")
        if self.stage in self.rows:
            self.progress.update(self.rows[self.stage], advance=1)
        layer = label.split(" ")[0]  # a render batch's label: "{layer} {objective}"
        if saved and layer in self.layer_todo:
            if layer not in self.rows:
                self.rows[layer] = self.progress.add_task(f"  {layer}", total=self.layer_todo[layer])
            self.progress.update(self.rows[layer], advance=saved)

    def on_report(self, current: str) -> None:
        super().on_report(current)
        self.progress.update(self.task, description=f"{self.slug} {current}")


class PlainReport(Report):
    """One plain line per event worth a line: each stage's start and end, each layer finished, and the run's state
    at least every ``every`` seconds while nothing else is said (the stage, its items, the counts, the elapsed time
    and the stage's latest words), so a log never goes quiet for long."""

    def __init__(self, *args: Any, every: float = PLAIN_EVERY, clock: Callable[[], float] = time.monotonic,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.every, self.clock = every, clock
        self.layer_done: dict[str, int] = {}
        self.started = self.last = clock()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.ticker = threading.Thread(target=self._tick, name="plain-progress", daemon=True)

    def __enter__(self) -> PlainReport:
        self.ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.ticker.join()

    def say(self, line: str) -> None:
        with self.lock:
            self.last = self.clock()
            super().say(line)

    def state(self) -> str:
        """The run's state in one line: ``tinylm-sparse: circuits 0/1 · 6912/6912 units · 3:05 · now ...``."""
        elapsed = int(self.clock() - self.started)
        parts = [f"{self.slug}: {self.stage or 'planning'}"
                 + (f" {self.items_done}/{self.items}" if self.items else ""),
                 f"{self.done}/{self.todo} {self.counted}", f"{elapsed // 60}:{elapsed % 60:02d}"]
        return " · ".join(parts + ([f"now {self.current}"] if self.current else []))

    def on_stage(self, name: str, items: int, counted: bool) -> None:
        super().on_stage(name, items, counted)
        self.current = ""
        self.say(f"{self.state()} · started")

    def on_saved(self, label: str, saved: int) -> None:
        super().on_saved(label, saved)
        layer = label.split(" ")[0]
        if saved and layer in self.layer_todo:  # feature visualisations: a line as each layer is finished
            self.layer_done[layer] = self.layer_done.get(layer, 0) + saved
            if self.layer_done[layer] >= self.layer_todo[layer]:
                self.say(f"{self.state()} · layer {layer} finished")
                return
        if self.items_done == self.items:
            self.say(f"{self.state()} · finished")
        elif saved and not self.layer_todo:  # a counted item of its own: a language model's layer of contexts
            self.say(f"{self.state()} · saved")
        elif self.clock() - self.last >= self.every:
            self.say(self.state())

    def _tick(self) -> None:
        """Print the state whenever ``every`` seconds pass without a line (a long pass that says nothing)."""
        while not self.stopped.wait(max(0.01, self.every / 4)):
            if self.clock() - self.last >= self.every:
                self.say(self.state())


def reporter(console: Console, *args: Any, **kwargs: Any) -> Report:
    """Live bars when ``console`` is a terminal, plain lines otherwise (``Report``'s arguments)."""
    return (TerminalReport if console.is_terminal else PlainReport)(console, *args, **kwargs)
