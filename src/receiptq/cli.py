"""The ``receiptq`` command: migrate the database, watch the queues, feed and drain them.

Every command that shows data takes ``--json`` (one JSON document on stdout);
otherwise it prints rich tables. Exit codes: 0 done, 1 failed (the database is
unreachable or not migrated, an id does not exist), 2 bad usage (a malformed
argument or setting, e.g. the database URL; nothing was written). Whatever the
command, those failures print one line that says what to do (:func:`main`),
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import datetime, timedelta
from types import FrameType
from typing import Any, NoReturn, TypeVar

import psycopg
from dramatiq.actor import Actor
from dramatiq.message import Message
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from receiptq import (
    __version__,
    actor_modules,
    bench,
    breakers_cli,
    config,
    db,
    demo,
    embedded,
    import_cli,
    monitor,
    queue_cli,
    receipts_cli,
)
from receiptq.broker import PostgresBroker
from receiptq.errors import QUOTE_LIMIT, ConfigError, MessageError, ReceiptqError, shorten
from receiptq.extras import MissingExtra
from receiptq.web import cli as web_cli
from receiptq.web import top as web_top

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Modules the workers import when ``receiptq process`` is given none.
DEFAULT_WORKER_MODULES = (actor_modules.DEFAULT_MODULE,)
#: Where ``receiptq enqueue --force`` sends a job of an actor no module declares.
DEFAULT_QUEUE = "default"
#: How often ``process --burst`` looks at the queues (s).
BURST_POLL_INTERVAL_S = 0.5
#: Consecutive empty looks before ``process --burst`` stops the workers.
BURST_IDLE_POLLS = 2

_DURATION = re.compile(r"(\d+)\s*([smhd])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_ACTOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,255}")

T = TypeVar("T")


class CommandError(Exception):
    """A command cannot do what was asked; the message is for the operator."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- argument parsing (pure) ----------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``2h`` or ``7d`` as a timedelta; ValueError for anything else."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"invalid duration {shorten(text)!r}: use a whole number and a unit s, m, h or d "
            "(e.g. 30s, 15m, 2h, 7d)"
        )
    amount, unit = match.groups()
    try:
        return timedelta(**{_DURATION_UNITS[unit]: int(amount)})
    except OverflowError:
        raise ValueError(f"duration {shorten(text)!r} is too long") from None


def parse_json_list(text: str) -> list[Any]:
    """A JSON array (an actor's positional arguments)."""
    value = _parse_json(text)
    if not isinstance(value, list):
        raise ValueError(f"expected a JSON list such as '[1, \"a\"]', got {shorten(text)!r}")
    return value


def parse_json_object(text: str) -> dict[str, Any]:
    """A JSON object (an actor's keyword arguments)."""
    value = _parse_json(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object such as '{{\"key\": 1}}', got {shorten(text)!r}")
    return value


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON {shorten(text)!r}: {exc}") from None


def parse_actor_name(text: str) -> str:
    if not _ACTOR_NAME.fullmatch(text):
        raise ValueError(
            f"invalid actor name {shorten(text)!r}: use letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or '_'"
        )
    return text


def parse_positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a whole number >= 1, got {shorten(text)!r}")
    return value


def parse_non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"expected a whole number >= 0, got {shorten(text)!r}")
    return value


def parse_positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"expected a number > 0, got {shorten(text)!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with its own messages (e.g. "invalid int value: '...'") cut short, so a
    100 KB argument is not echoed back whole."""

    def error(self, message: str) -> NoReturn:
        super().error(shorten(message, 2 * QUOTE_LIMIT))


def _arg(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type whose error message is the parser's own (argparse hides it)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


# -- output ---------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=_json_default))


def _error(message: str) -> None:
    print(f"receiptq: error: {message}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"receiptq: warning: {message}", file=sys.stderr)


def _fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _queue_rows(snap: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(name, figures, is_total) for each queue, then the totals."""
    for name, figures in snap["queues"].items():
        yield name, figures, False
    yield "total", snap["totals"], True


def queue_settings_text(figures: dict[str, Any]) -> Text:
    """A queue's settings in a few words: ``paused, cap 4, ocr_receipt cap 2`` (or "-")."""
    parts = [Text("paused", style="yellow")] if figures.get("paused") else []
    if figures.get("max_running") is not None:
        parts.append(Text(f"cap {figures['max_running']}"))
    for actor, cap in (figures.get("actor_caps") or {}).items():
        parts.append(Text(f"{actor} cap {cap['max_running']}"))
    return Text(", ").join(parts) if parts else Text("-")


def backlog_table(snap: dict[str, Any]) -> Table:
    table = Table(
        title="Queues",
        title_justify="left",
        caption="running: started by a worker thread; reserved: claimed by a worker, not started",
        caption_justify="left",
    )
    table.add_column("Queue")
    for header in ("Ready", "Scheduled", "Running", "Reserved", "Dead", "Oldest ready"):
        table.add_column(header, justify="right")
    table.add_column("Settings")
    for name, f, is_total in _queue_rows(snap):
        if is_total:
            table.add_section()
        table.add_row(
            name,
            *(str(f[key]) for key in ("queued", "scheduled", "running", "reserved", "dead")),
            _fmt(f["oldest_ready_s"], suffix=" s"),
            "" if is_total else queue_settings_text(f),
            style="bold" if is_total else None,
        )
    return table


def throughput_table(snap: dict[str, Any]) -> Table:
    table = Table(title="Finished jobs (1m / 5m / 60m)", title_justify="left")
    table.add_column("Queue")
    for header in ("Done", "Failed", "Jobs/s", "Wait p50/p95", "Run p50/p95", "Success 5m"):
        table.add_column(header, justify="right")
    for name, f, is_total in _queue_rows(snap):
        if is_total:
            table.add_section()
        table.add_row(
            name,
            f"{f['done_1m']}/{f['done_5m']}/{f['done_60m']}",
            f"{f['failed_1m']}/{f['failed_5m']}/{f['failed_60m']}",
            f"{f['throughput_per_s_1m']:.1f}",
            f"{_fmt(f['latency_p50_ms'])}/{_fmt(f['latency_p95_ms'])} ms",
            f"{_fmt(f['run_p50_ms'])}/{_fmt(f['run_p95_ms'])} ms",
            _fmt(None if f["success_rate_5m"] is None else 100 * f["success_rate_5m"], suffix="%"),
            style="bold" if is_total else None,
        )
    return table


def workers_table(snap: dict[str, Any]) -> Table:
    table = Table(title="Workers", title_justify="left")
    headers = ("Worker", "Queues", "Running", "Reserved", "CPU", "Memory", "Heartbeat", "State")
    for header in headers:
        table.add_column(
            header, justify="left" if header in ("Worker", "Queues", "State") else "right"
        )
    for w in snap["workers"]:
        if not w["alive"]:
            state = Text("lost", style="red")
        elif w.get("throttled"):
            state = Text(f"throttled: {w['throttled']}", style="yellow")
        else:
            state = Text("alive", style="green")
        table.add_row(
            w["id"],
            ", ".join(w["queues"]),
            str(w["running"]),
            str(w["reserved"]),
            _fmt(w.get("cpu_percent"), ".0f", "%"),
            _fmt(w.get("memory_percent"), ".0f", "%"),
            f"{w['heartbeat_age_s']:.0f} s ago",
            state,
        )
    if not snap["workers"]:
        table.caption = "no worker has a heartbeat"
    return table


def breakers_table(snap: dict[str, Any]) -> Table:
    table = Table(title="Circuit breakers", title_justify="left")
    for header in ("Breaker", "State", "Failures", "Opened at", "May close at"):
        table.add_column(header, justify="right" if header == "Failures" else "left")
    styles = {"closed": "green", "half-open": "yellow", "open": "red"}
    for b in snap.get("breakers", []):
        table.add_row(
            b["name"],
            Text(b["state"], style=styles.get(b["state"], "")),
            f"{b['fail_counter']}/{b['fail_max']}",
            b["opened_at"] or "-",
            b["closes_at"] or "-",
        )
    return table


def status_view(snap: dict[str, Any]) -> RenderableType:
    """The human form of a :func:`receiptq.monitor.snapshot`."""
    parts: list[RenderableType] = [backlog_table(snap), throughput_table(snap), workers_table(snap)]
    if snap.get("breakers"):
        parts.append(breakers_table(snap))
    return Group(
        *parts,
        Text(f"as of {snap['generated_at']}", style="dim"),
    )


def call_arguments(args: Any, kwargs: Any) -> str:
    """A job's arguments as one short line: ``42, "eu", lang="de"``."""
    parts = [json.dumps(value) for value in args or ()]
    parts += [f"{key}={json.dumps(value)}" for key, value in (kwargs or {}).items()]
    return shorten(", ".join(parts))


def dead_letters_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="Dead letters", title_justify="left")
    headers = ("ID", "Failed at", "Queue", "Actor", "Arguments", "Attempts", "Reason", "Error")
    for header in headers:
        table.add_column(
            header,
            justify="right" if header in ("ID", "Attempts") else "left",
            # Names stay whole; arguments and error share what width is left, cut.
            no_wrap=header in ("ID", "Queue", "Actor"),
            min_width=6 if header in ("Arguments", "Error") else None,
        )
    for row in rows:
        error = f"{row['error_type'] or ''}: {row['error'] or ''}".strip(": ")
        table.add_row(
            str(row["id"]),
            f"{row['failed_at']:%Y-%m-%d %H:%M:%S}",
            row["queue"],
            row["actor"],
            Text(call_arguments(row["args"], row["kwargs"]), overflow="ellipsis", no_wrap=True),
            str(row["attempts"]),
            row["reason"],
            Text(error, overflow="ellipsis", no_wrap=True),
        )
    return table


def dead_letter_view(row: dict[str, Any]) -> RenderableType:
    table = Table(show_header=False, title=f"Dead letter {row['id']}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in row.items():
        if key not in ("id", "message", "traceback"):
            table.add_row(key, "-" if value is None else str(value))
    message = row["message"] or {}
    table.add_row("args", json.dumps(message.get("args")))
    table.add_row("kwargs", json.dumps(message.get("kwargs")))
    # The retries' copy of a traceback is shown once, below (--json keeps everything).
    options = {k: v for k, v in (message.get("options") or {}).items() if k != "traceback"}
    table.add_row("options", json.dumps(options))
    traceback = Text(row["traceback"] or "(no traceback kept)")
    return Group(table, Text("Traceback", style="bold"), traceback)


# -- commands -------------------------------------------------------------------------


def _url(args: argparse.Namespace) -> str:
    return config.database_url(getattr(args, "url", None), setting="--url")


def run_db_migrate(args: argparse.Namespace) -> int:
    url = _url(args)
    applied = db.migrate(url)
    notes = receipts_cli.receipt_chain_notes(url)
    if args.json:
        _print_json({"applied": applied, "up_to_date": not applied, "notes": notes})
        return EXIT_OK
    console = Console()
    for name in applied:
        console.print(f"applied {name}")
    if not applied:
        console.print("up to date")
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)
    return EXIT_OK


def run_db_stop(args: argparse.Namespace) -> int:
    pid = embedded.stop()
    folder = embedded.data_dir()
    if args.json:
        _print_json({"stopped": pid is not None, "pid": pid, "data_dir": str(folder)})
    elif pid is None:
        print(f"the embedded PostgreSQL ({folder}) is not running")
    else:
        print(f"stopped the embedded PostgreSQL (pid {pid}, data in {folder})")
    return EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    url = _url(args)
    if not args.watch:
        snap = monitor.snapshot(url)
        if args.json:
            _print_json(snap)
        else:
            Console().print(status_view(snap))
        return EXIT_OK
    try:
        with closing(_watch_frames(url, args.interval_s)) as frames:
            _show_frames(frames, as_json=args.json)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _show_frames(frames: Iterator[dict[str, Any]], *, as_json: bool) -> None:
    if as_json:
        for frame in frames:
            print(json.dumps(frame, default=_json_default), flush=True)
        return
    with Live(_frame_view(next(frames)), console=Console(), auto_refresh=False) as live:
        for frame in frames:
            live.update(_frame_view(frame), refresh=True)


def _frame_view(frame: dict[str, Any]) -> RenderableType:
    if "error" in frame:
        return Text(frame["error"], style="red")
    return status_view(frame)


def _pause(seconds: float) -> None:
    """The wait between two ``status --watch`` frames (Ctrl-C ends it)."""
    time.sleep(seconds)


def _watch_frames(url: str, interval_s: float) -> Generator[dict[str, Any]]:
    """A snapshot every ``interval_s``; a lost connection yields an error frame and is
    opened again at the next tick (the first connection must succeed)."""
    conn: psycopg.Connection[Any] | None = db.connect(url)
    try:
        while True:
            try:
                if conn is None:
                    conn = db.connect(url)
                yield monitor.snapshot(conn)
            except psycopg.OperationalError as exc:
                if conn is not None:
                    conn.close()
                conn = None
                yield {"error": f"{db.explain_error(exc, url)}; retrying"}
            _pause(interval_s)
    finally:
        if conn is not None:
            conn.close()


def _require_dead_letters(conn: psycopg.Connection[Any], ids: Sequence[int]) -> None:
    found = {row["id"] for row in db.fetch_all(conn, "dead_letter_existing_ids", {"ids": ids})}
    missing = sorted(set(ids) - found)
    if missing:
        listed = ", ".join(map(str, missing))
        raise CommandError(f"no dead letter with id {listed}; nothing was changed")


def run_dead_letter_list(args: argparse.Namespace) -> int:
    params = {"actor": args.actor, "queue": args.queue, "limit": args.limit}
    with db.connect(_url(args)) as conn:
        rows = db.fetch_all(conn, "dead_letter_list", params)
    if args.json:
        _print_json(rows)
    elif rows:
        Console().print(dead_letters_table(rows))
    else:
        Console().print("no dead letters")
    return EXIT_OK


def run_dead_letter_show(args: argparse.Namespace) -> int:
    with db.connect(_url(args)) as conn:
        row = db.fetch_one(conn, "dead_letter_get", {"id": args.id})
    if row is None:
        raise CommandError(f"no dead letter with id {args.id}")
    if args.json:
        _print_json(row)
    else:
        Console().print(dead_letter_view(row))
    return EXIT_OK


def run_dead_letter_retry(args: argparse.Namespace) -> int:
    params = {"all": args.all, "ids": args.ids, "actor": args.actor}
    with db.connect(_url(args)) as conn:
        if args.ids:
            _require_dead_letters(conn, args.ids)
        moved = sorted(row["id"] for row in db.fetch_all(conn, "dead_letter_retry", params))
    skipped = sorted(set(args.ids) - set(moved))
    if args.json:
        _print_json({"retried": moved, "count": len(moved), "skipped": skipped})
    else:
        Console().print(f"moved {len(moved)} dead letter(s) back to the queue")
        if skipped:
            ids = ", ".join(map(str, skipped))
            _error(f"not retried (their message is queued or running again already): {ids}")
    return EXIT_FAILED if skipped else EXIT_OK


def run_dead_letter_purge(args: argparse.Namespace) -> int:
    with db.connect(_url(args)) as conn:
        before = None
        if args.older_than is not None:
            row = db.fetch_one(conn, "db_now")
            assert row is not None
            before = row["now"] - args.older_than
        if args.ids:
            _require_dead_letters(conn, args.ids)
        params = {"all": args.all, "ids": args.ids, "before": before}
        purged = sorted(row["id"] for row in db.fetch_all(conn, "dead_letter_purge", params))
    if args.json:
        _print_json({"purged": purged, "count": len(purged)})
    else:
        Console().print(f"purged {len(purged)} dead letter(s)")
    return EXIT_OK


def run_enqueue(args: argparse.Namespace) -> int:
    url = _url(args)
    actor = _declared_actor(args, url)
    options = {"priority": args.priority, "tier": args.tier, "user_id": args.user}
    if actor is not None:  # what actor.send() would store
        if args.priority is None and actor.priority:
            options["priority"] = actor.priority
        options["max_retries"] = actor.options.get("max_retries")
    message: Message[Any] = Message(
        queue_name=_queue_for(args, actor),
        actor_name=args.actor,
        args=tuple(args.args),
        kwargs=args.kwargs,
        options={key: value for key, value in options.items() if value is not None},
    )
    broker = PostgresBroker(url)
    try:
        broker.declare_queue(message.queue_name)
        # On a connection of our own: a wrong URL fails at once, not after the pool's wait.
        with db.connect(url) as conn, broker.transaction(conn):
            broker.enqueue(message, delay=args.delay_ms)
    finally:
        broker.close()
    if args.json:
        _print_json(
            {
                "message_id": message.message_id,
                "queue": message.queue_name,
                "actor": message.actor_name,
                "delay_ms": args.delay_ms,
                "options": message.options,
            }
        )
    else:
        print(message.message_id)
    return EXIT_OK


def _declared_actor(args: argparse.Namespace, url: str) -> Actor[Any, Any] | None:
    """The actor ``args.actor`` as the app's modules declare it; refuse an actor no
    module declares (nothing would run its job) unless ``--force``."""
    modules = args.modules or [actor_modules.DEFAULT_MODULE]
    try:
        actors = actor_modules.declared_actors(modules, url)
    except actor_modules.ModuleImportError as exc:
        if not args.force:
            raise CommandError(
                f"{exc}, so actor {args.actor!r} cannot be checked: name your app's actor "
                "module with --module, or send anyway with --force",
                EXIT_USAGE,
            ) from None
        _warn(f"{exc}; sending to {args.actor!r} unchecked (--force)")
        return None
    actor = actors.get(args.actor)
    if actor is None and not args.force:
        known = shorten(", ".join(sorted(actors)) or "none", 160)
        raise CommandError(
            f"no actor {args.actor!r} in {', '.join(modules)} (it declares: {known}): "
            "name your app's actor module with --module, or send anyway with --force",
            EXIT_USAGE,
        )
    if actor is None:
        _warn(f"no actor {args.actor!r} in {', '.join(modules)}; sending anyway (--force)")
    return actor


def _queue_for(args: argparse.Namespace, actor: Actor[Any, Any] | None) -> str:
    """``--queue``, else the actor's declared queue, else ``default``."""
    declared = actor.queue_name if actor is not None else None
    if args.queue is not None and declared is not None and args.queue != declared:
        _warn(
            f"actor {args.actor!r} is declared on queue {declared!r}; sending to "
            f"{args.queue!r} as --queue says (only workers of {args.queue!r} will see it)"
        )
    return args.queue or declared or DEFAULT_QUEUE


def dramatiq_command(
    modules: Sequence[str], queues: Sequence[str], processes: int, threads: int
) -> list[str]:
    """The stock Dramatiq CLI over ``modules`` (the first one sets the broker)."""
    command = [sys.executable, "-m", "dramatiq", *modules]
    command += ["--processes", str(processes), "--threads", str(threads)]
    if queues:
        command += ["--queues", *queues]
    return command


def _exit_code(returncode: int) -> int:
    """A child's return code as ours (killed by signal N: 128 + N, as shells do)."""
    return returncode if returncode >= 0 else 128 - returncode


@contextmanager
def _forward_signals(child: subprocess.Popen[bytes]) -> Iterator[None]:
    """Pass SIGINT and SIGTERM on to the child (it runs in its own process group, so a
    Ctrl-C in the terminal reaches it once, through us, and a second one kills it as
    Dramatiq intends)."""

    def forward(signum: int, frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_when_drained(child: subprocess.Popen[bytes], url: str, queues: Sequence[str]) -> int:
    """Wait until the queues have nothing ready or running, then stop the workers."""
    idle_polls = 0
    with db.connect(url) as conn:
        while idle_polls < BURST_IDLE_POLLS:
            try:
                return _exit_code(child.wait(timeout=BURST_POLL_INTERVAL_S))
            except subprocess.TimeoutExpired:
                pass
            row = db.fetch_one(conn, "job_count_ready_or_running", {"queues": queues or None})
            idle_polls = idle_polls + 1 if row is not None and row["jobs"] == 0 else 0
    child.send_signal(signal.SIGTERM)
    return _exit_code(child.wait())


def run_process(args: argparse.Namespace) -> int:
    url = _url(args)
    # The workers would only log the same error every few seconds: say it once, here.
    with db.connect(url) as conn:
        db.fetch_one(conn, "job_count_ready_or_running", {"queues": None})
    command = dramatiq_command(
        args.modules or DEFAULT_WORKER_MODULES, args.queues, args.processes, args.threads
    )
    env = {**os.environ, "RECEIPTQ_DATABASE_URL": url}
    child = subprocess.Popen(command, env=env, process_group=0)
    with _forward_signals(child):
        try:
            if args.burst:
                return _stop_when_drained(child, url, args.queues)
            return _exit_code(child.wait())
        finally:
            if child.poll() is None:  # we are leaving on an error: do not orphan the workers
                child.send_signal(signal.SIGTERM)
                child.wait()


# -- the parser -----------------------------------------------------------------------


def _add_db(sub: Any, common: argparse.ArgumentParser) -> None:
    db_parser = sub.add_parser("db", help="database schema")
    db_sub = db_parser.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    migrate = db_sub.add_parser(
        "migrate", parents=[common], help="apply the migrations not applied yet (idempotent)"
    )
    migrate.set_defaults(func=run_db_migrate)
    stop = db_sub.add_parser(
        "stop",
        help="stop the embedded PostgreSQL under RECEIPTQ_HOME (started when no URL is set; "
        "never a server given by URL)",
    )
    stop.add_argument("--json", action="store_true", help="print JSON")
    stop.set_defaults(func=run_db_stop)


def _add_status(sub: Any, common: argparse.ArgumentParser) -> None:
    status = sub.add_parser("status", parents=[common], help="queues, throughput and workers")
    status.add_argument("--watch", action="store_true", help="redraw until Ctrl-C")
    status.add_argument(
        "--interval-s",
        type=_arg(parse_positive_float),
        default=1.0,
        help="seconds between redraws with --watch (default 1)",
    )
    status.set_defaults(func=run_status)


def _add_dead_letter(sub: Any, common: argparse.ArgumentParser) -> None:
    dead = sub.add_parser("dead-letter", help="list, show, retry and purge dead letters")
    dead_sub = dead.add_subparsers(dest="dead_letter_command", required=True, metavar="COMMAND")

    listing = dead_sub.add_parser("list", parents=[common], help="dead letters, newest first")
    listing.add_argument("--actor", help="only this actor's")
    listing.add_argument("--queue", help="only this queue's")
    listing.add_argument("--limit", type=_arg(parse_positive_int), default=50, help="default 50")
    listing.set_defaults(func=run_dead_letter_list)

    show = dead_sub.add_parser("show", parents=[common], help="one dead letter and its traceback")
    show.add_argument("id", type=int)
    show.set_defaults(func=run_dead_letter_show)

    retry = dead_sub.add_parser(
        "retry", parents=[common], help="queue dead letters again as fresh jobs"
    )
    chosen = retry.add_mutually_exclusive_group(required=True)
    chosen.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    chosen.add_argument("--all", action="store_true", help="every dead letter")
    chosen.add_argument("--actor", help="every dead letter of this actor")
    retry.set_defaults(func=run_dead_letter_retry)

    purge = dead_sub.add_parser("purge", parents=[common], help="delete dead letters for good")
    chosen = purge.add_mutually_exclusive_group(required=True)
    chosen.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
    chosen.add_argument("--all", action="store_true", help="every dead letter")
    chosen.add_argument(
        "--older-than",
        type=_arg(parse_duration),
        metavar="D",
        help="those that failed more than D ago: 30s, 15m, 2h, 7d",
    )
    purge.set_defaults(func=run_dead_letter_purge)


def _add_enqueue(sub: Any, common: argparse.ArgumentParser) -> None:
    enqueue = sub.add_parser("enqueue", parents=[common], help="send one job to an actor")
    enqueue.add_argument("actor", type=_arg(parse_actor_name), metavar="ACTOR")
    enqueue.add_argument(
        "--args", type=_arg(parse_json_list), required=True, metavar="JSON", help="a JSON list"
    )
    enqueue.add_argument(
        "--kwargs", type=_arg(parse_json_object), default={}, metavar="JSON", help="a JSON object"
    )
    enqueue.add_argument(
        "--queue",
        type=_arg(config.validate_queue_name),
        help=f"default: the queue the actor is declared on ({DEFAULT_QUEUE!r} with --force)",
    )
    enqueue.add_argument(
        "--module",
        dest="modules",
        action="append",
        metavar="MODULE",
        help="the module that declares the app's actors, as given to the workers "
        f"(repeatable; default: {actor_modules.DEFAULT_MODULE})",
    )
    enqueue.add_argument(
        "--force",
        action="store_true",
        help="send even if no module declares the actor (its job waits for a worker that does)",
    )
    enqueue.add_argument("--priority", type=int, help="lower runs first (default: the actor's)")
    enqueue.add_argument(
        "--delay-ms", type=_arg(parse_non_negative_int), help="run no sooner than this"
    )
    enqueue.add_argument("--tier", help="the user's tier, e.g. pro")
    enqueue.add_argument("--user", help="the user's id")
    enqueue.set_defaults(func=run_enqueue)


def _add_process(sub: Any, common: argparse.ArgumentParser) -> None:
    process = sub.add_parser("process", parents=[common], help="run Dramatiq worker processes")
    process.add_argument(
        "modules",
        nargs="*",
        metavar="MODULE",
        help=f"modules that declare the actors (default: {' '.join(DEFAULT_WORKER_MODULES)})",
    )
    process.add_argument(
        "--queues",
        nargs="+",
        type=_arg(config.validate_queue_name),
        default=[],
        metavar="Q",
        help="consume only these queues (default: all the modules declare)",
    )
    process.add_argument("--processes", type=_arg(parse_positive_int), default=2, help="default 2")
    process.add_argument(
        "--threads", type=_arg(parse_positive_int), default=8, help="per process, default 8"
    )
    process.add_argument(
        "--burst",
        action="store_true",
        help="stop once the queues (all, without --queues) have nothing ready or running; "
        "scheduled jobs stay for later",
    )
    process.set_defaults(func=run_process)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="receiptq", description="Background jobs on PostgreSQL, with Dramatiq.")
    url_help = (
        "PostgreSQL URL (default: RECEIPTQ_DATABASE_URL, then DATABASE_URL, "
        "then the embedded PostgreSQL under RECEIPTQ_HOME)"
    )
    parser.add_argument("--url", default=None, help=url_help)
    parser.add_argument("--version", action="version", version=f"receiptq {__version__}")
    # Subcommands accept --url and --json too; SUPPRESS keeps a subcommand from
    # overwriting a --url given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help=url_help)
    data = argparse.ArgumentParser(add_help=False, parents=[common])
    data.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_db(sub, data)
    _add_status(sub, data)
    _add_dead_letter(sub, data)
    _add_enqueue(sub, data)
    _add_process(sub, common)
    bench.add_parser(sub)
    demo.add_parser(sub)
    queue_cli.add_parser(sub)
    web_cli.add_parser(sub)
    web_top.add_parser(sub)
    receipts_cli.add_parser(sub)
    breakers_cli.add_parser(sub)
    import_cli.add_parser(sub)
    return parser


def _exit_status(code: Any) -> int:
    return code if isinstance(code, int) else EXIT_OK if code is None else EXIT_USAGE


def _database_hint(args: argparse.Namespace) -> str | None:
    """The URL the command was most likely using, to name the database in an error."""
    try:
        url = getattr(args, "url", None) or config.configured_database_url()
    except ConfigError:
        return None
    return url or config.started_embedded_url()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``receiptq`` command; return its exit code.

    A bad setting or argument (ConfigError, MessageError: exit 2), a database that
    is not migrated or cannot be reached (exit 1) print one line that says what to
    do, whichever command met them; other errors keep their traceback (bugs).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has printed
        return _exit_status(exc.code)
    try:
        if getattr(args, "url", None) is not None:
            config.validate_database_url(args.url, "--url")
        return int(args.func(args))
    except CommandError as exc:
        _error(str(exc))
        return exc.exit_code
    except MissingExtra as exc:
        _error(str(exc))
        return EXIT_FAILED
    except (ConfigError, MessageError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except (ReceiptqError, psycopg.Error) as exc:
        line = db.explain_error(exc, _database_hint(args))
        if line is None:
            raise
        _error(line)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
