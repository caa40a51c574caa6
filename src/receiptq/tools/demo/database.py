"""Where ``receiptq demo`` runs, and what in that database is the demo's.

By default the demo runs in a database of its own: the embedded PostgreSQL when no
URL is configured, else a database named :data:`DEMO_DATABASE` on the server the
URL names (created when missing; the URL's own database is not touched).
``--in-place`` runs it in the URL's database itself.

The demo marks what it creates: its users' email addresses are in
:data:`DEMO_DOMAIN`, and every message it sends carries the option
:data:`MARK_OPTION` (the run's id), which its jobs and dead letters keep. It counts
and deletes only rows so marked, and its workers consume only queues of its own
(``demo.ocr``, ...). Before it migrates or writes anything, it looks for jobs, dead
letters and receipts it did not create, and refuses to run beside them unless told
to (``--allow-existing-data``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from receiptq import db, dead_letters, embedded
from receiptq.config import configured_database_url, embedded_database_url
from receiptq.services import receipts

DEMO_DATABASE = "receiptq_demo"
#: The demo's users live in this email domain.
DEMO_DOMAIN = "demo.receiptq.test"
#: The message option that marks the demo's messages; its value is the run's id.
MARK_OPTION = "receiptq_demo"
#: The demo's receipts go through queues of its own, so its workers never take an
#: app's jobs: the actors' queues with this prefix (RECEIPTQ_RECEIPT_QUEUE_PREFIX).
QUEUE_PREFIX = "demo."
QUEUES = tuple(QUEUE_PREFIX + queue for queue in ("ocr", "matching", "email"))


class DemoRefused(Exception):
    """The demo will not run here (the message is one line: why, and what to do)."""


@dataclass(frozen=True)
class Place:
    """The database the demo runs in."""

    url: str
    #: One line for the operator: which database, and why that one.
    description: str
    embedded: bool = False
    #: The demo started the embedded server (so it stops it at the end).
    started_server: bool = False


def describe(url: str) -> str:
    """Where a URL points, without its password."""
    params = conninfo_to_dict(url)
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{params.get('user') or ''}@{host}:{port}/{params.get('dbname') or ''}".lstrip("@")


def choose(url: str | None, *, in_place: bool) -> Place:
    """The demo's database: see the module's docstring. Creates :data:`DEMO_DATABASE`
    when it has to."""
    explicit = url or configured_database_url()
    if explicit is None:
        was_running = embedded.running_pid() is not None
        local = embedded_database_url()
        return Place(
            local,
            f"database: the embedded PostgreSQL in {embedded.data_dir()} (no database URL set)",
            embedded=True,
            started_server=not was_running,
        )
    named = conninfo_to_dict(explicit).get("dbname")
    if in_place or named == DEMO_DATABASE:
        return Place(explicit, f"database: {describe(explicit)}")
    own = make_conninfo(explicit, dbname=DEMO_DATABASE)
    created = _create_demo_database(explicit)
    return Place(
        own,
        f"database: {describe(own)}, the demo's own ({'created now, ' if created else ''}"
        f"next to {named or 'the URL'}'s database, which the demo does not touch; "
        "--in-place runs it there)",
    )


def _create_demo_database(url: str) -> bool:
    """Create :data:`DEMO_DATABASE` on the URL's server unless it exists; True if created."""
    with db.connect(url) as conn:
        row = db.fetch_one(conn, "demo_database_exists")
        if row is not None and row["present"]:
            return False
        try:
            db.execute(conn, "demo_database_create")
        except psycopg.errors.DuplicateDatabase:
            return False  # another demo created it meanwhile
        except psycopg.errors.InsufficientPrivilege:
            raise DemoRefused(
                f"cannot create database {DEMO_DATABASE} on {describe(url)} (permission "
                f"denied): create it (`createdb {DEMO_DATABASE}`), or pass --in-place to run "
                "the demo in the URL's database"
            ) from None
    return True


def foreign_data(url: str) -> dict[str, int]:
    """What the database holds that no demo created: {"jobs": n, "dead letters": n,
    "receipts": n}, without the kinds it has none of. Reads only: before any migration."""
    found: dict[str, int] = {}
    with db.connect(url) as conn:
        present = db.fetch_one(conn, "demo_tables_present") or {}
        if present.get("jobs"):
            found["jobs"] = _count(conn, "demo_foreign_jobs")
        if present.get("dead_letters"):
            found["dead letters"] = dead_letters.count_without_option(conn, MARK_OPTION)
        if present.get("receipts"):
            found["receipts"] = _count(conn, "demo_foreign_receipts", {"domain": DEMO_DOMAIN})
    if "receipts" not in found and receipts.tables_of_0_1(url):
        with db.connect(url) as conn:
            found["receipts"] = _count(conn, "demo_foreign_receipts_0_1", {"domain": DEMO_DOMAIN})
    return {kind: n for kind, n in found.items() if n}


def _count(conn: psycopg.Connection[Any], name: str, params: db.Params = None) -> int:
    row = db.fetch_one(conn, name, params)
    return int(row["n"]) if row is not None else 0


def check_alone(place: Place, *, allow_existing_data: bool) -> dict[str, int]:
    """Refuse (:class:`DemoRefused`) a database with data the demo did not create,
    unless allowed; what there is (the demo leaves it alone either way)."""
    found = foreign_data(place.url)
    if found and not allow_existing_data:
        listed = ", ".join(f"{n} {kind}" for kind, n in found.items())
        elsewhere = "pass --url for another server" if place.embedded else "leave out --in-place"
        raise DemoRefused(
            f"the database holds data the demo did not create ({listed}); the demo never "
            f"touches it, but will not run beside it by default: {elsewhere} to run in a "
            "database of its own, or pass --allow-existing-data to run here anyway"
        )
    return found


def clear_previous(conn: psycopg.Connection[Any]) -> None:
    """Remove what earlier demos left: their users and those users' data, and the jobs
    and dead letters of the messages they sent."""
    for query in ("app_delete_emails_of_domain", "app_delete_receipts_of_domain",
                  "app_delete_transactions_of_domain", "app_delete_users_of_domain"):  # fmt: skip
        db.execute(conn, query, {"domain": DEMO_DOMAIN})
    db.execute(conn, "demo_jobs_delete")
    dead_letters.purge(conn, with_option=MARK_OPTION)


def run_jobs(conn: psycopg.Connection[Any], run_id: str) -> dict[str, dict[str, int]]:
    """A run's jobs left, per queue: {"queued", "scheduled", "running"}."""
    rows = db.fetch_all(conn, "demo_run_jobs", {"run": run_id})
    return {row.pop("queue"): {key: int(n) for key, n in row.items()} for row in rows}


def run_dead_letters(conn: psycopg.Connection[Any], run_id: str) -> dict[str, int]:
    """A run's dead letters, per queue."""
    return dead_letters.count_by_queue(conn, option=MARK_OPTION, value=run_id)
