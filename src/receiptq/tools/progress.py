"""The progress bar the tools draw (bench's drains, the demo's receipts)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)


def progress_bar(
    console: Console,
    *,
    label: str = "[bold]{task.description}",
    bar_width: int | None = 40,
    disable: bool = False,
) -> Progress:
    """A bar with done/total, percent and elapsed time (``bar_width`` None: the
    terminal's width)."""
    return Progress(
        TextColumn(label),
        BarColumn(bar_width=bar_width),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=disable,
    )
