"""The progress bars of put, get, cat, verify and check (Rich, on standard error).

Imported only when a bar is actually shown (standard error is a terminal and neither ``--json``
nor ``-q`` was given): Rich's progress machinery costs tens of milliseconds to import, which a
``get`` in a script or a benchmark should not pay.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from .cliview import counted
from .config import format_size

_active: ProgressBar | None = None


def stderr_console() -> Console:
    """The console bars are drawn on."""
    return Console(file=sys.stderr)


def stop_active() -> None:
    """Take the bar on screen, if any, off it (before an error is printed)."""
    if _active is not None:
        _active.stop()


def active() -> ProgressBar | None:
    """The bar on screen, if any."""
    return _active


class AmountColumn(ProgressColumn):
    """``done / total`` in the task's unit: binary sizes for bytes, else ``N/M chunks``."""

    def render(self, task: Task) -> Text:
        done, total = task.completed, task.total
        if not task.fields.get("unit") and not total:
            return Text("")  # a phase without a count (verify's spares, a repair's survey)
        if task.fields.get("unit") == "bytes":
            text = format_size(done) + (f" / {format_size(total)}" if total else "")
        else:
            text = f"{int(done)}/{int(total or 0)} {task.fields.get('unit') or ''}".rstrip()
        return Text(text)


class RateColumn(ProgressColumn):
    """The rate in the units the results use (``MiB/s``), or chunks per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None or not task.fields.get("unit"):
            return Text("")
        if task.fields.get("unit") == "bytes":
            return Text(f"{format_size(speed)}/s")
        return Text(f"{speed:.0f} {task.fields.get('unit') or ''}/s")


def phased_columns(*extra: Any) -> tuple[Any, ...]:
    """Phase label, bar, amount, rate, then ``extra`` columns, then the ETA."""
    return (
        TextColumn("{task.fields[phase]}"),
        BarColumn(),
        AmountColumn(),
        RateColumn(),
        *extra,
        TimeRemainingColumn(),
    )


class PeersColumn(ProgressColumn):
    """How many peers a download is receiving from: "1 peer", "3 peers"."""

    def render(self, task: Task) -> Text:
        peers = task.fields.get("peers", 0)
        return Text(counted(peers if isinstance(peers, int) else 0, "peer"))


def peers_column() -> Any:
    """How many peers a download is receiving from (:class:`PeersColumn`)."""
    return PeersColumn()


def text_column(template: str) -> Any:
    """A column of text, ``{task.fields[...]}`` filled in."""
    return TextColumn(template)


class ProgressBar:
    """A transient Rich progress bar on stderr, or nothing when ``enabled`` is false.

    ``phase`` labels the bar from its first frame, before the daemon has reported anything."""

    def __init__(
        self, enabled: bool, columns: tuple[Any, ...], *, phase: str = "", total: int | None = None
    ) -> None:
        self.bar: Progress | None = None
        self._new_phase = False
        if enabled:
            self.bar = Progress(
                *columns, console=stderr_console(), auto_refresh=False, transient=True
            )
            self.task = self.bar.add_task(
                "", total=total, peers=0, phase=phase, unit="bytes", files=""
            )

    def __enter__(self) -> ProgressBar:
        global _active
        if self.bar is not None:
            self.bar.start()
            _active = self
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Take the (transient) bar off the screen; idempotent."""
        global _active
        if _active is self:
            _active = None
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def update(self, **fields: Any) -> None:
        """Change the task's fields and redraw; ``total=None`` clears the total (Rich's own
        ``update`` would keep the previous phase's, showing ``0/10`` for a phase with none)."""
        if self.bar is None:
            return
        if "total" in fields and fields["total"] is None:
            self.bar.tasks[0].total = None  # a plain attribute: no frame drawn
        if self._new_phase:  # one frame with the new phase's label and figures, none between
            self._new_phase = False
            self.bar.reset(self.task, **fields)
        else:
            self.bar.update(self.task, **fields)
        self.bar.refresh()

    def reset(self) -> None:
        """A new phase: its own rate and ETA, from the next :meth:`update` on."""
        self._new_phase = True

    def finish(self) -> None:
        """Draw the finished state (a count at its total) as the last frame."""
        if self.bar is not None:
            task = self.bar.tasks[0]
            if task.total:
                self.update(completed=task.total)
