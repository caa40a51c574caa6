"""Least privilege: what a worker, a sender and a dashboard need of receiptq's objects.

:data:`ROLE_GRANTS` is the one list: ``receiptq db grant ROLE --worker|--app|--readonly``
grants it (:func:`grant`), ``--print`` prints it as GRANT statements
(:func:`grant_script`), docs/operations.md shows it as a table
(:func:`markdown_table`, checked by a test) and a test compares a granted role's
privileges in the catalog with it (:func:`role_privileges`). Every statement names
receiptq's own objects only (schema ``receiptq``); the role is an identifier that
psycopg quotes.

Sequences need no grant: the tables' ids are identity columns, whose sequences
PostgreSQL uses for an INSERT without checking privileges on them. Functions are
granted EXECUTE explicitly even though PostgreSQL grants it to PUBLIC by default,
so that the roles keep working where a platform revoked that default.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from receiptq import db
from receiptq.errors import ConfigError, ReceiptqError, shorten

SCHEMA = "receiptq"
#: What a role may be called here: PostgreSQL's unquoted identifiers, and dashes.
ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")

READ = ("SELECT",)
WRITE = ("SELECT", "INSERT", "UPDATE", "DELETE")
UPSERT = ("SELECT", "INSERT", "UPDATE")


@dataclass(frozen=True)
class Grant:
    """Privileges on one object of schema receiptq, and why the role needs them."""

    name: str
    privileges: tuple[str, ...]
    why: str
    kind: str = "table"  # table (or view) | function


def _fn(name: str, why: str) -> Grant:
    return Grant(name, ("EXECUTE",), why, kind="function")


#: Every role kind's privileges (besides USAGE on schema receiptq, which all three get).
ROLE_GRANTS: dict[str, tuple[Grant, ...]] = {
    "worker": (
        Grant("jobs", WRITE, "claim, ack, retry, rescue; actors that send jobs"),
        Grant(
            "dead_letters", WRITE, "dead letters; retention deletes old ones (UPDATE: row locks)"
        ),
        Grant("stats_minute", WRITE, "statistics; retention deletes old minutes"),
        Grant("workers", WRITE, "heartbeat, started deliveries, stale workers removed"),
        Grant("queue_settings", READ, "pauses, caps and prefetch of the queues"),
        Grant("actor_caps", READ, "caps per actor, read by the claim"),
        Grant("rate_limits", WRITE, "rate limiters and barriers; expired keys removed"),
        Grant("periodic_ticks", WRITE, "periodic ticks (scheduler); retention (UPDATE: row locks)"),
        Grant("breakers", UPSERT, "shared circuit-breaker state"),
        Grant("results", WRITE, "actor results; expired ones removed"),
        Grant("tiers", WRITE, "the tier policy, written at start for receiptq.enqueue()"),
        Grant(
            "sql_sends",
            ("SELECT", "UPDATE", "DELETE"),
            "jobs sent from SQL, counted in statistics (UPDATE: their row locks)",
        ),  # fmt: skip
        _fn("claim_jobs", "the claim"),
        _fn("hist_add", "statistics histograms"),
        _fn("enqueue", "actors or hooks that send from SQL"),
    ),
    "app": (
        Grant("jobs", UPSERT, "send (a message id sent again is requeued); unique keys"),
        Grant("stats_minute", UPSERT, "count the jobs sent"),
        Grant("tiers", READ, "tier offsets of receiptq.enqueue()"),
        Grant("sql_sends", ("INSERT",), "count the jobs receiptq.enqueue() sends"),
        Grant("results", READ, "read actor results (message.get_result)"),
        Grant("rate_limits", UPSERT, "group completion barriers set when a group is sent"),
        _fn("enqueue", "send from SQL: triggers, pg_cron"),
        _fn("hist_add", "statistics histograms"),
    ),
    "readonly": (
        Grant("jobs", READ, "queued, running and scheduled jobs"),
        Grant("claimed_jobs", READ, "running and reserved jobs"),
        Grant("dead_letters", READ, "dead letters"),
        Grant("stats_minute", READ, "throughput, failures, run time, latency"),
        Grant("workers", READ, "live workers"),
        Grant("queue_settings", READ, "pauses, caps, prefetch"),
        Grant("actor_caps", READ, "caps per actor"),
        Grant("breakers", READ, "circuit-breaker state"),
    ),
}
#: The command-line flag of each role kind, and what it is for.
ROLE_KINDS = {
    "worker": "dramatiq workers and the periodiq scheduler",
    "app": "the application that sends jobs",
    "readonly": "`receiptq web`, `receiptq status`, `receiptq top`",
}


def validate_role(role: str) -> str:
    """The role name, if it is one receiptq will quote and grant to; else ConfigError."""
    if not ROLE_NAME.match(role):
        raise ConfigError(
            f"{shorten(repr(role), 80)} is not a role name: use letters, digits, '_', '$' "
            "or '-', starting with a letter or '_', at most 63 characters"
        )
    return role


def _target(grant: Grant) -> sql.Composable:
    kind = sql.SQL("FUNCTION" if grant.kind == "function" else "TABLE")
    return sql.SQL("{} {}").format(kind, sql.Identifier(SCHEMA, grant.name))


def statements(role: str, kind: str) -> Iterator[sql.Composed]:
    """The GRANT statements that give ``role`` what a ``kind`` role needs."""
    quoted = sql.Identifier(validate_role(role))
    yield sql.SQL(db.query("grant_schema_usage")).format(role=quoted)
    for grant in ROLE_GRANTS[kind]:
        privileges = sql.SQL(", ").join(sql.SQL(p) for p in grant.privileges)
        yield sql.SQL(db.query("grant_privileges")).format(
            privileges=privileges, target=_target(grant), role=quoted
        )


def grant_script(role: str, kind: str) -> str:
    """The GRANT statements as text, one a line (``receiptq db grant --print``)."""
    lines = (s.as_string(None).splitlines() for s in statements(role, kind))
    return "".join(f"{line}\n" for text in lines for line in text if not line.startswith("--"))


class RoleMissing(ReceiptqError):
    """The role to grant to does not exist."""


def grant(url: str, role: str, kind: str) -> int:
    """Grant ``role`` what a ``kind`` role needs, in one transaction; the statements run."""
    validate_role(role)
    with db.connect(url) as conn, conn.transaction():
        row = db.fetch_one(conn, "role_exists", {"role": role})
        if row is None or not row["present"]:
            raise RoleMissing(
                f"there is no role {role} on the PostgreSQL at "
                f"{db.describe_database(url).rpartition('/')[0]}: create it first "
                f"(CREATE ROLE {role} LOGIN PASSWORD '...')"
            )
        count = 0
        for statement in statements(role, kind):
            conn.execute(statement)
            count += 1
    return count


def role_privileges(conn: psycopg.Connection[Any], role: str) -> set[tuple[str, str, str]]:
    """What ``role`` was granted itself in this database, as (kind, object, privilege):
    schema, table, sequence and function grants, in any schema."""
    rows = db.fetch_all(conn, "role_granted_privileges", {"role": role})
    return {(r["kind"], r["object"], r["privilege"]) for r in rows}


def expected_privileges(kind: str) -> set[tuple[str, str, str]]:
    """What :func:`role_privileges` shows once a ``kind`` role is granted (and nothing else)."""
    expected = {("schema", SCHEMA, "USAGE")}
    for g in ROLE_GRANTS[kind]:
        expected |= {(g.kind, f"{SCHEMA}.{g.name}", p) for p in g.privileges}
    return expected


def markdown_table() -> str:
    """The privileges of the three role kinds as a Markdown table (docs/operations.md)."""
    names: list[tuple[str, str]] = []
    for grants in ROLE_GRANTS.values():
        for g in grants:
            if (g.kind, g.name) not in names:
                names.append((g.kind, g.name))
    lines = [
        "| object | `--worker` | `--app` | `--readonly` |",
        "| --- | --- | --- | --- |",
        f"| schema `{SCHEMA}` | USAGE | USAGE | USAGE |",
    ]
    for kind, name in names:
        cells = []
        for grants in ROLE_GRANTS.values():
            found = [g for g in grants if (g.kind, g.name) == (kind, name)]
            cells.append(", ".join(found[0].privileges) if found else "-")
        label = f"function `{SCHEMA}.{name}()`" if kind == "function" else f"`{SCHEMA}.{name}`"
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"
