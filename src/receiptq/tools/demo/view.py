"""The demo's live view: its receipts per status and its queues, refreshed while the
workers run, until no job of the run is left."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console, Group
from rich.live import Live
from rich.progress import Progress
from rich.table import Table

from receiptq import monitor
from receiptq.processes import check_signals, exited_error, stop_process
from receiptq.services import receipts
from receiptq.tools.demo import database as place
from receiptq.tools.demo.database import QUEUES
from receiptq.tools.demo.figures import RunStats, Totals
from receiptq.tools.demo.world import Upload
from receiptq.tools.progress import progress_bar

POLL_S = 0.25
STOP_GRACE_S = 20.0


def status_table(snap: dict[str, Any], stats: dict[str, Totals], counts: dict[str, int]) -> Table:
    title = "receipts: " + ", ".join(f"{n} {status}" for status, n in counts.items())
    table = Table(title=title, title_justify="left")
    table.add_column("queue")
    for name in (*monitor.LIVE_FIELDS, "done", "retried", "postponed", "dead"):
        table.add_column(name, justify="right")
    for queue in QUEUES:
        live = snap["queues"].get(queue, {})
        totals = stats.get(queue, Totals()).counts
        table.add_row(
            queue,
            *(str(live.get(key, 0)) for key in monitor.LIVE_FIELDS),
            str(totals["succeeded"]),
            str(totals["retried"]),
            str(totals["postponed"]),
            str(live.get("dead", 0)),
        )
    breakers = ", ".join(f"{b['name']} {b['state']}" for b in snap.get("breakers", []))
    if breakers:
        table.caption = f"circuit breakers: {breakers}"
    return table


@dataclass
class Run:
    """One run of the demo: its id (the mark on its messages), where it runs, its
    folder (worker log, summary), what it submitted and its statistics."""

    run_id: str
    where: place.Place
    folder: Path
    conn: psycopg.Connection[Any]
    uploads: list[Upload] = field(default_factory=list)
    stats: RunStats | None = None

    @property
    def receipt_ids(self) -> list[int]:
        return [upload.receipt_id for upload in self.uploads]

    def counts(self) -> dict[str, int]:
        """This run's receipts per status (and stuck)."""
        return receipts.status_counts(self.conn, ids=self.receipt_ids)

    def jobs_left(self) -> int:
        """This run's jobs still queued, scheduled or claimed."""
        per_queue = place.run_jobs(self.conn, self.run_id)
        return sum(n for figures in per_queue.values() for n in figures.values())

    def per_queue(self) -> dict[str, Totals]:
        return self.stats.per_queue() if self.stats is not None else {}

    def frame(self, progress: Progress, task: Any) -> Group:
        counts = self.counts()
        progress.update(task, completed=counts["notified"] + counts["failed"] + counts["stuck"])
        table = status_table(monitor.snapshot(self.conn), self.per_queue(), counts)
        return Group(progress, table)


def new_run_id() -> str:
    """Sortable and unique: the start time and a random suffix."""
    return f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def live_console() -> Console:
    """A console on stderr as wide as the terminal: the size the terminal reports for
    stderr, stdout or stdin, whichever answers first with a width (rich alone stops at
    the first stream that answers, even with 0 columns, and takes 80 x 25 for any
    TERM=dumb terminal)."""
    for fd in (2, 1, 0):
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            continue
        if size.columns > 0:
            return Console(stderr=True, width=size.columns, height=max(size.lines, 10))
    return Console(stderr=True)


def watch(
    run: Run,
    workers: subprocess.Popen[bytes],
    log_path: Path,
    timeout_s: float,
    console: Console,
) -> tuple[bool, float]:
    """Live view until no job of this run is left; (finished, wall seconds)."""
    started = time.monotonic()
    progress = progress_bar(console, label="[bold]receipts done", bar_width=None)
    task = progress.add_task("done", total=len(run.uploads))
    with Live(run.frame(progress, task), console=console, refresh_per_second=4) as live:
        while True:
            if run.jobs_left() == 0:
                wall_s = time.monotonic() - started
                # Stop the workers (they write their last statistics as they go), so
                # that the last frame shows every job they ran.
                stop_process(workers, STOP_GRACE_S)
                live.update(run.frame(progress, task))
                return True, wall_s
            live.update(run.frame(progress, task))
            check_signals()
            if workers.poll() is not None:
                raise exited_error("the workers", workers, log_path)
            if time.monotonic() - started > timeout_s:
                return False, time.monotonic() - started
            time.sleep(POLL_S)
