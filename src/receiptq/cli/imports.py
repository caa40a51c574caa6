"""``receiptq import dramatiq-pg``: bring dramatiq-pg's pending and rejected messages over.

Exit codes: 0 every row was imported (or was already), 1 some rows were skipped
(listed; they stay in dramatiq-pg's table) or the table is not there, 2 bad usage.
"""

from __future__ import annotations

import argparse
from typing import Any

import psycopg
from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from receiptq import db
from receiptq.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    add_command,
    arg,
    command_group,
    data_options,
    parse_positive_int,
    print_json,
    url,
)
from receiptq.import_dramatiq_pg import (
    DEFAULT_BATCH_SIZE,
    ImportOptions,
    ImportReport,
    QueueTally,
    Source,
    SourceError,
    run_import,
    validate_identifier,
)
from receiptq.settings import Settings
from receiptq.tiers import TierPolicy

#: Skipped rows the table output lists (--json lists up to MAX_SKIPPED_LISTED).
SKIPPED_SHOWN = 20

#: (QueueTally field, header) of the summary's columns.
_COLUMNS = (
    ("jobs", "jobs"),
    ("scheduled", "sched-\nuled"),
    ("requeued", "re-\nqueued*"),
    ("dead_letters", "dead\nletters"),
    ("already_present", "already\nthere"),
    ("skipped", "skipped"),
    ("done", "done\n(left)"),
)


def run_dramatiq_pg(args: argparse.Namespace) -> int:
    source = Source(args.from_schema, args.from_prefix)
    settings = Settings.from_env()
    options = ImportOptions(
        move=args.move,
        dry_run=args.dry_run,
        batch_size=args.batch_size,
        max_bytes=settings.max_message_bytes,
        tiers=TierPolicy.from_env(settings),
    )
    try:
        with db.connect(url(args)) as conn:
            report = _import(conn, source, options, show_progress=not args.json)
    except SourceError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print_json(report.as_json())
    else:
        Console().print(report_view(report))
    return EXIT_FAILED if report.totals.skipped else EXIT_OK


def _import(
    conn: psycopg.Connection[Any], source: Source, options: ImportOptions, *, show_progress: bool
) -> ImportReport:
    """Run the import, with a progress bar on stderr when it takes more than one batch."""
    if not show_progress:
        return run_import(conn, source, options)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(
        *columns, TimeElapsedColumn(), console=Console(stderr=True), transient=True
    ) as bar:
        task = bar.add_task(f"importing from {source}", visible=False)

        def show(rows_read: int, total: int) -> None:
            visible = total > options.batch_size
            bar.update(task, completed=rows_read, total=total, visible=visible)

        return run_import(conn, source, options, show)


def report_view(report: ImportReport) -> RenderableType:
    """The summary: a row per queue, the actors, the skipped rows and what to know."""
    verb = "would import (dry run: nothing was written)" if report.dry_run else "imported"
    table = Table(title=f"dramatiq-pg {report.source}: {verb}", title_justify="left")
    table.add_column("queue")
    columns = [*_COLUMNS, ("moved", "moved\nout")] if report.move else _COLUMNS
    for _, header in columns:
        table.add_column(header, justify="right")
    for name, tally in sorted(report.queues.items()):
        table.add_row(name, *_cells(tally, columns))
    table.add_section()
    table.add_row("total", *_cells(report.totals, columns), style="bold")
    return Group(table, *_actors_view(report), *_skipped_view(report), *_notes(report))


def _cells(tally: QueueTally, columns: Any) -> list[str]:
    return [f"{getattr(tally, name):,}" for name, _ in columns]


def _actors_view(report: ImportReport) -> list[RenderableType]:
    if not report.actors:
        return []
    table = Table(title="per actor", title_justify="left")
    table.add_column("actor")
    table.add_column("jobs", justify="right")
    table.add_column("dead letters", justify="right")
    for actor, counts in sorted(report.actors.items()):
        table.add_row(actor, f"{counts['jobs']:,}", f"{counts['dead_letters']:,}")
    hint = Text(
        "Your receiptq workers must declare each of these actors: a job of an actor no "
        "worker declares becomes a dead letter (reason 'unknown actor').",
        style="dim",
    )
    return [table, hint]


def _skipped_view(report: ImportReport) -> list[RenderableType]:
    total = report.totals.skipped
    if not total:
        return []
    lines: list[RenderableType] = [
        Text(
            f"skipped {total:,} row(s): not imported, left in {report.source}; fix or delete "
            "them there and run the import again",
            style="yellow",
        )
    ]
    for row in report.skipped[:SKIPPED_SHOWN]:
        where = f"{row['queue_name']} ({row['state']})"
        lines.append(Text(f"  {row['message_id']}  {where}: {row['reason']}"))
    if total > SKIPPED_SHOWN:
        lines.append(Text(f"  ... and {total - SKIPPED_SHOWN:,} more (--json lists them)"))
    return lines


def _notes(report: ImportReport) -> list[RenderableType]:
    totals = report.totals
    notes = []
    if totals.requeued:
        notes.append(
            f"* {totals.requeued:,} message(s) were being processed when dramatiq-pg stopped "
            "(state consumed): they are queued again and may run a second time (delivery is "
            "at-least-once: actors must be idempotent)"
        )
    if report.dramatiq_pg_connections:
        notes.append(
            f"warning: {report.dramatiq_pg_connections} dramatiq-pg connection(s) are open on "
            "this database: stop its workers first (messages they hold may run twice here "
            "too), and run the import again once the last sender has switched (it adds only "
            "what is new)"
        )
    if not report.move and not report.dry_run and totals.jobs + totals.dead_letters:
        notes.append(
            f"{report.source} was left as it was (--move deletes the imported rows); a "
            "second run imports nothing twice"
        )
    return [Text(note) for note in notes]


def _identifier(what: str, *, empty_ok: bool = False) -> Any:
    def parse_identifier(text: str) -> str:
        return validate_identifier(text, what=what, empty_ok=empty_ok)

    return arg(parse_identifier)


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq import``."""
    what = "bring messages over from another broker"
    sources = command_group(subparsers, "import", what, dest="import_source", metavar="SOURCE")
    dpg = add_command(
        sources,
        "dramatiq-pg",
        run_dramatiq_pg,
        "dramatiq-pg's queued, delayed and rejected messages (same database)",
        [data_options("print the summary as JSON")],
        description="Import dramatiq-pg's queued, consumed and delayed messages as jobs "
        "(same message id, canonical queue, due time from eta) and its rejected ones as "
        "dead letters; done rows are left alone. One transaction per batch; a second run "
        "imports nothing twice. Stop dramatiq-pg's workers first.",
    )
    dpg.add_argument(
        "--from-schema",
        type=_identifier("schema name"),
        metavar="SCHEMA",
        default="dramatiq",
        help="dramatiq-pg's schema (its broker's schema=, default dramatiq)",
    )
    dpg.add_argument(
        "--from-prefix",
        type=_identifier("table prefix", empty_ok=True),
        metavar="PREFIX",
        default="",
        help="dramatiq-pg's table prefix (its broker's prefix=, default none)",
    )
    dpg.add_argument(
        "--move",
        action="store_true",
        help="delete the imported rows from dramatiq-pg's table, in the same transaction",
    )
    dpg.add_argument(
        "--dry-run", action="store_true", help="show what would be imported; write nothing"
    )
    dpg.add_argument(
        "--batch-size",
        type=parse_positive_int,
        metavar="N",
        default=DEFAULT_BATCH_SIZE,
        help=f"rows per transaction (default {DEFAULT_BATCH_SIZE})",
    )
