"""Import dramatiq-pg's messages into receiptq (``receiptq import dramatiq-pg``).

dramatiq-pg 0.12 (on Dramatiq 1.x) keeps every message in one table,
``dramatiq.queue`` (its package's ``schema.sql``): ``message_id`` (uuid),
``queue_name``, ``state`` (``queued``, ``consumed``, ``rejected``, ``done``),
``mtime`` and ``message`` (the Dramatiq message as JSON). A delayed send, or a
retry waiting for its backoff, is stored on the delay queue's name
(``receipts.DQ``) with an ``eta`` option (epoch ms), and a worker holds it in
memory, ``consumed``, until then. Each row becomes (:func:`plan`):

- ``queued``, or ``consumed`` on a delay queue: a job with the same message id on
  the canonical queue, due at the ``eta`` (or now);
- ``consumed`` on a canonical queue (a worker held it when it stopped, so it may
  have run): a job due now, counted apart, since delivery is at-least-once;
- ``rejected``, or any row on a ``.XQ`` (Dramatiq's dead-letter) queue: a dead
  letter, reason "imported from dramatiq-pg";
- ``done``: left alone.

receiptq's enqueue rules apply (queue names, message size, option types, tiers):
a row that breaks one is skipped, reported and left where it is. Rows go over in
batches, one transaction each, and each imported message id is recorded in
``receiptq.imported_messages``, so a second run imports nothing twice.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from dramatiq.common import q_name
from dramatiq.message import Message

from receiptq import db
from receiptq.broker import DEFAULT_MAX_RETRIES
from receiptq.pg.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    JobRow,
    MessageError,
    decode_message,
    job_row,
)
from receiptq.tiers import TierPolicy

#: The dead letters' reason.
IMPORT_REASON = "imported from dramatiq-pg"
#: What receiptq.imported_messages calls the source.
SOURCE_NAME = "dramatiq-pg"
#: Rows per batch (one transaction each).
DEFAULT_BATCH_SIZE = 500
#: Skipped rows listed in a report (all are counted).
MAX_SKIPPED_LISTED = 1000
#: Why an insert left a job out (receiptq's de-duplication, as at send time).
UNIQUE_KEY_TAKEN = "a job with the same unique_key is queued or running in receiptq"
#: dramatiq-pg's states; done rows are never read.
STATES = ("queued", "consumed", "rejected", "done")
#: Columns an import reads from dramatiq-pg's table.
SOURCE_COLUMNS = ("message_id", "queue_name", "state", "mtime", "message")
#: A PostgreSQL identifier as --from-schema and --from-prefix accept it.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,57}")


class SourceError(Exception):
    """The import cannot start; the message says what to do."""


def validate_identifier(text: str, *, what: str, empty_ok: bool = False) -> str:
    """A schema name or table prefix, or ValueError (it goes through sql.Identifier too)."""
    if (empty_ok and text == "") or IDENTIFIER.fullmatch(text):
        return text
    raise ValueError(
        f"invalid {what} {text!r}: use letters, digits and '_', starting with a letter or '_'"
    )


@dataclass(frozen=True, slots=True)
class Source:
    """dramatiq-pg's queue table: ``schema.prefix + "queue"`` (its broker's arguments)."""

    schema: str = "dramatiq"
    prefix: str = ""

    @property
    def table(self) -> str:
        return f"{self.prefix}queue"

    @property
    def identifiers(self) -> dict[str, tuple[str, str]]:
        return {"source": (self.schema, self.table)}

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One row of dramatiq-pg's table, as the batch query reads it."""

    source_id: str
    queue_name: str | None
    state: str | None
    mtime: datetime | None
    message: str | None  # the message as JSON text


@dataclass(frozen=True, slots=True)
class Plan:
    """A row that becomes a job or a dead letter."""

    row: SourceRow
    kind: Literal["job", "dead_letter"]
    job: JobRow  # the columns, by receiptq's enqueue rules
    attempts: int  # a job: deliveries so far (Dramatiq's retries); a dead letter: made
    enqueued_at: datetime | None  # the message's Dramatiq timestamp
    traceback: str | None = None  # a dead letter's last traceback, if Dramatiq kept one

    @property
    def queue(self) -> str:
        return self.job.queue

    @property
    def message_id(self) -> str:
        return self.job.message_id

    @property
    def may_have_run(self) -> bool:
        """A worker held it to run (not to wait for its eta) when dramatiq-pg stopped."""
        return (
            self.kind == "job"
            and self.row.state == "consumed"
            and self.row.queue_name == self.queue
        )


@dataclass(frozen=True, slots=True)
class Skip:
    """A row that is not imported, and why (it stays in dramatiq-pg's table)."""

    row: SourceRow
    queue: str  # its canonical queue, or its name as it is when unusable
    reason: str


def plan(row: SourceRow, *, max_bytes: int, tiers: TierPolicy | None) -> Plan | Skip:
    """Decide what a row of dramatiq-pg becomes (pure: no I/O)."""
    if row.state not in STATES or row.state == "done":
        return Skip(row, _canonical(row.queue_name), f"state {row.state!r} is not one to import")
    try:
        message = _message(row)
        job = job_row(
            message,
            delay_ms=None,
            actor_priority=0,  # the actor's own priority is not known here
            max_retries=DEFAULT_MAX_RETRIES,
            max_bytes=max_bytes,
            tiers=tiers,
        )
    except ValueError as exc:  # a MessageError, or an invalid queue name
        return Skip(row, _canonical(row.queue_name), str(exc))
    retries = _retries(message)
    enqueued_at = _timestamp(message.message_timestamp)
    if row.state == "rejected" or (row.queue_name or "").endswith(".XQ"):
        tb = message.options.get("traceback")
        tb = tb if isinstance(tb, str) else None
        return Plan(row, "dead_letter", job, max(retries, 1), enqueued_at, tb)
    return Plan(row, "job", job, retries, enqueued_at)


def _canonical(queue_name: str | None) -> str:
    return q_name(queue_name) if queue_name else "?"


def _message(row: SourceRow) -> Message[Any]:
    """The row's message, checked against the row's own id and queue name."""
    if row.message is None:
        raise MessageError("the row has no message")
    message = decode_message(row.message)
    try:
        same_id = uuid.UUID(str(message.message_id)) == uuid.UUID(row.source_id)
    except ValueError:
        same_id = False
    if not same_id:
        raise MessageError(
            f"the message's id {message.message_id!r} is not the row's ({row.source_id})"
        )
    if message.queue_name != row.queue_name:
        raise MessageError(
            f"the message's queue {message.queue_name!r} is not the row's {row.queue_name!r}"
        )
    return message


def _retries(message: Message[Any]) -> int:
    """How many failures Dramatiq's Retries middleware counted (0 when none or unusable)."""
    retries = message.options.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        return 0
    return min(retries, 2**31 - 1)


def _timestamp(epoch_ms: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def error_of(traceback: str | None) -> tuple[str | None, str | None]:
    """(error type, error text) from a traceback's last line: ``ValueError: boom``."""
    lines = [line for line in (traceback or "").splitlines() if line.strip()]
    if not lines:
        return None, None
    kind, sep, text = lines[-1].partition(": ")
    if sep and re.fullmatch(r"[A-Za-z_][\w.]*", kind):
        return kind.rsplit(".", 1)[-1], text
    return None, lines[-1]


# -- the report -----------------------------------------------------------------------


@dataclass
class QueueTally:
    """What an import did with one queue's rows."""

    jobs: int = 0  # imported as jobs, of which:
    scheduled: int = 0  #   due later (an eta still ahead)
    requeued: int = 0  #   consumed when dramatiq-pg stopped: may have run already
    dead_letters: int = 0
    already_present: int = 0
    skipped: int = 0
    done: int = 0  # done rows, left in dramatiq-pg's table
    moved: int = 0  # rows deleted from dramatiq-pg's table (--move)

    def add(self, other: QueueTally) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class ImportReport:
    source: str
    dry_run: bool
    move: bool
    queues: dict[str, QueueTally] = field(default_factory=dict)
    actors: dict[str, Counter[str]] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # the first few, with why
    dramatiq_pg_connections: int = 0

    def queue(self, name: str) -> QueueTally:
        return self.queues.setdefault(name, QueueTally())

    @property
    def totals(self) -> QueueTally:
        total = QueueTally()
        for tally in self.queues.values():
            total.add(tally)
        return total

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dry_run": self.dry_run,
            "move": self.move,
            "queues": {name: asdict(t) for name, t in sorted(self.queues.items())},
            "totals": asdict(self.totals),
            "actors": {name: dict(c) for name, c in sorted(self.actors.items())},
            "skipped": self.skipped,
            "dramatiq_pg_connections": self.dramatiq_pg_connections,
        }

    def note_skipped(self, skip: Skip) -> None:
        self.queue(skip.queue).skipped += 1
        if len(self.skipped) < MAX_SKIPPED_LISTED:
            row = skip.row
            self.skipped.append(
                {
                    "message_id": row.source_id,
                    "queue_name": row.queue_name,
                    "state": row.state,
                    "reason": skip.reason,
                }
            )

    def note_imported(self, p: Plan, now: datetime) -> None:
        tally = self.queue(p.queue)
        kind = "jobs" if p.kind == "job" else "dead_letters"
        setattr(tally, kind, getattr(tally, kind) + 1)
        self.actors.setdefault(p.job.actor, Counter())[kind] += 1
        tally.scheduled += p.kind == "job" and p.job.run_at is not None and p.job.run_at > now
        tally.requeued += p.may_have_run


# -- the import -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportOptions:
    move: bool = False
    dry_run: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    tiers: TierPolicy | None = None


def require_source(conn: psycopg.Connection[Any], source: Source) -> None:
    """Raise SourceError unless dramatiq-pg's table is there with the columns we read."""
    params = {"schema": source.schema, "table": source.table}
    columns = {r["name"] for r in db.fetch_all(conn, "dramatiq_pg_source_columns", params)}
    if not columns:
        raise SourceError(
            f"no dramatiq-pg table {source} in this database: pass --from-schema (and "
            "--from-prefix) as given to dramatiq-pg's broker, or --url for its database"
        )
    missing = [name for name in SOURCE_COLUMNS if name not in columns]
    if missing:
        raise SourceError(
            f"table {source} has no column {', '.join(missing)}: it is not dramatiq-pg's "
            "queue table (check --from-schema and --from-prefix)"
        )


def run_import(
    conn: psycopg.Connection[Any],
    source: Source,
    options: ImportOptions,
    progress: Callable[[int, int], None] = lambda rows_read, total: None,
) -> ImportReport:
    """Import every row but the done ones, one transaction per batch (rolled back
    with ``dry_run``); ``progress(rows_read, total)`` is called before the first
    batch and after each. ``conn`` is in autocommit mode (each batch is its own
    transaction)."""
    require_source(conn, source)
    report, total = _new_report(conn, source, options)
    read, after = 0, None
    progress(read, total)
    while True:
        with conn.transaction() as tx:
            params = {"after": after, "limit": options.batch_size}
            rows = db.fetch_all(conn, "dramatiq_pg_batch", params, source.identifiers)
            if rows:
                _import_batch(conn, source, [SourceRow(**r) for r in rows], options, report)
                after = rows[-1]["source_id"]
            if options.dry_run:
                raise psycopg.Rollback(tx)
        read += len(rows)
        progress(read, max(total, read))
        if len(rows) < options.batch_size:
            return report


def _new_report(
    conn: psycopg.Connection[Any], source: Source, options: ImportOptions
) -> tuple[ImportReport, int]:
    """A report holding what is known before the first batch (done rows, dramatiq-pg's
    open connections), and how many rows the import will read."""
    report = ImportReport(str(source), options.dry_run, options.move)
    row = db.fetch_one(conn, "dramatiq_pg_open_connections")
    report.dramatiq_pg_connections = row["connections"] if row else 0
    counts = db.fetch_all(conn, "dramatiq_pg_counts", identifiers=source.identifiers)
    for count in counts:
        if count["state"] == "done":
            report.queue(_canonical(count["queue_name"])).done += count["messages"]
    return report, sum(c["messages"] for c in counts if c["state"] != "done")


def _import_batch(
    conn: psycopg.Connection[Any],
    source: Source,
    rows: list[SourceRow],
    options: ImportOptions,
    report: ImportReport,
) -> None:
    decided = [plan(row, max_bytes=options.max_bytes, tiers=options.tiers) for row in rows]
    plans = [p for p in decided if isinstance(p, Plan)]
    ids = {"message_ids": [p.message_id for p in plans]}
    present = {r["message_id"] for r in db.fetch_all(conn, "dramatiq_pg_present", ids)}
    new = [p for p in plans if p.message_id not in present]
    stored = _insert_jobs(conn, [p for p in new if p.kind == "job"])
    stored |= _insert_dead_letters(conn, [p for p in new if p.kind == "dead_letter"])
    _record(conn, [p for p in new if p.message_id in stored])
    now = datetime.now(UTC)
    for p in decided:
        if isinstance(p, Skip):
            report.note_skipped(p)
        elif p.message_id in present:
            report.queue(p.queue).already_present += 1
        elif p.message_id in stored:
            report.note_imported(p, now)
        else:  # the insert left it out: its unique_key is queued or running already
            report.note_skipped(Skip(p.row, p.queue, UNIQUE_KEY_TAKEN))
    if options.move:
        held = [p for p in plans if p.message_id in present or p.message_id in stored]
        _delete_moved(conn, source, held, report)


def _job_columns(plans: list[Plan]) -> dict[str, list[Any]]:
    """The columns jobs and dead letters share, as arrays (one element per plan)."""
    return {
        "message_ids": [p.job.message_id for p in plans],
        "queues": [p.job.queue for p in plans],
        "actors": [p.job.actor for p in plans],
        "priorities": [p.job.priority for p in plans],
        "max_attempts": [p.job.max_attempts for p in plans],
        "tiers": [p.job.tier for p in plans],
        "user_ids": [p.job.user_id for p in plans],
        "messages": [p.job.message for p in plans],
        "attempts": [p.attempts for p in plans],
    }


def _insert_jobs(conn: psycopg.Connection[Any], plans: list[Plan]) -> set[str]:
    if not plans:
        return set()
    params = {
        **_job_columns(plans),
        "run_ats": [p.job.run_at for p in plans],
        "sent_ats": [p.enqueued_at for p in plans],
        "unique_keys": [p.job.unique_key for p in plans],
    }
    return {r["message_id"] for r in db.fetch_all(conn, "dramatiq_pg_insert_jobs", params)}


def _insert_dead_letters(conn: psycopg.Connection[Any], plans: list[Plan]) -> set[str]:
    if not plans:
        return set()
    errors = [error_of(p.traceback) for p in plans]
    params = {
        **_job_columns(plans),
        "error_types": [kind for kind, _ in errors],
        "errors": [text for _, text in errors],
        "tracebacks": [p.traceback for p in plans],
        "enqueued_ats": [p.enqueued_at for p in plans],
        "failed_ats": [p.row.mtime for p in plans],
        "reason": IMPORT_REASON,
    }
    rows = db.fetch_all(conn, "dramatiq_pg_insert_dead_letters", params)
    return {r["message_id"] for r in rows}


def _record(conn: psycopg.Connection[Any], plans: list[Plan]) -> None:
    if plans:
        params = {
            "source": SOURCE_NAME,
            "message_ids": [p.message_id for p in plans],
            "source_states": [p.row.state for p in plans],
            "imported_as": [p.kind for p in plans],
        }
        db.execute(conn, "dramatiq_pg_record_imports", params)


def _delete_moved(
    conn: psycopg.Connection[Any], source: Source, plans: list[Plan], report: ImportReport
) -> None:
    if plans:
        params = {"source_ids": [p.row.source_id for p in plans]}
        db.execute(conn, "dramatiq_pg_delete_moved", params, source.identifiers)
        for p in plans:
            report.queue(p.queue).moved += 1
