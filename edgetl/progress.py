"""Progress bars and console output (rich), quiet when not attached to a terminal or when asked."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, highlight=False)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


def info(message: str) -> None:
    console.print(message, soft_wrap=True)


class _NullBar:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, **kw) -> None:
        pass


class _Bar:
    def __init__(self, progress: Progress, task) -> None:
        self.progress, self.task = progress, task

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def update(self, **kw) -> None:
        self.progress.update(self.task, **kw)


@contextlib.contextmanager
def bar(description: str, total: int, enabled: bool = True) -> Iterator[_Bar | _NullBar]:
    if not enabled or not sys.stderr.isatty():
        yield _NullBar()
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        yield _Bar(progress, progress.add_task(description, total=total, status=""))
