"""A job's progress on the terminal: a rich progress bar, or plain lines without a TTY."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from prunepilot.schemas import JobInfo

__all__ = ["JobProgress", "describe"]

_LINE_EVERY_S = 5.0


def _best(info: JobInfo) -> str:
    return "-" if info.best_score is None else f"{info.best_score:.4f}"


def describe(info: JobInfo) -> str:
    """One line: status, phase, trials done/planned and best score."""
    trials = f"{info.trials_done}/{info.trials_planned or '?'} trials"
    phase = f" {info.phase}" if info.phase else ""
    text = f"{info.status.value}{phase}, {trials}, best {_best(info)}"
    if info.error:
        text += f": {info.error}"
    return text


class JobProgress:
    """Draws one job's progress; feed it every fresh `JobInfo`, then `close` it.

    On a terminal it is a live bar (phase, trials done/planned, best score, elapsed time).
    Elsewhere (logs, CI, pipes) it prints a line when the status or phase changes and at
    most every few seconds while trials progress, so captured output stays short.
    """

    def __init__(self, job_id: str, console: Console | None = None) -> None:
        self.job_id = job_id
        self.console = console or Console(stderr=True)
        self._live = self.console.is_terminal
        self._last: tuple[str, str | None] | None = None
        self._last_done = -1
        self._last_line = 0.0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if self._live:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                TextColumn("{task.fields[state]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("best {task.fields[best]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._task = self._progress.add_task(f"job {job_id}", total=None, state="", best="-")
            self._progress.start()

    def update(self, info: JobInfo) -> None:
        """Show ``info``."""
        if self._progress is not None and self._task is not None:
            state = escape(info.status.value + (f" · {info.phase}" if info.phase else ""))
            self._progress.update(
                self._task,
                completed=info.trials_done,
                total=info.trials_planned or None,
                state=state,
                best=_best(info),
            )
            return
        key = (info.status.value, info.phase)
        now = time.monotonic()
        changed = key != self._last
        moved = info.trials_done != self._last_done and now - self._last_line >= _LINE_EVERY_S
        if changed or moved or (info.status.terminal and info.trials_done != self._last_done):
            self.console.print(
                f"job {self.job_id}: {describe(info)}", highlight=False, markup=False
            )
            self._last = key
            self._last_done = info.trials_done
            self._last_line = now

    def close(self) -> None:
        """Stop drawing (the last state stays on screen)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
