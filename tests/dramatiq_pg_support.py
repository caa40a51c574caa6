"""dramatiq-pg's table and rows, for the import tests (fixtures/dramatiq_pg/README.md).

``create_table`` runs dramatiq-pg 0.12.0's own schema.sql (vendored) the way its
``generate_init_sql`` does. ``recorded_rows`` are rows dramatiq-pg itself wrote.
``sent`` builds more rows in the format dramatiq-pg writes them (its ENQUEUE,
CONSUME_ONE, NACK and ACK statements: the message as Dramatiq encodes it, on the
``.DQ`` queue name with an ``eta`` option when delayed); a test checks its rows
against the recorded ones.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dramatiq_pg"


def create_table(conn: psycopg.Connection[Any], schema: str = "dramatiq", prefix: str = "") -> None:
    """dramatiq-pg's schema.sql, as ``dramatiq_pg.schema.generate_init_sql(schema, prefix)``."""
    names = {
        ':"schema"': schema,
        ':"state"': f"{prefix}state",
        ':"queue"': f"{prefix}queue",
    }
    lines = []
    for line in (FIXTURES / "schema.sql").read_text().splitlines():
        if line.startswith("\\"):
            continue
        for placeholder, name in names.items():
            line = line.replace(placeholder, sql.Identifier(name).as_string(conn))
        lines.append(line)
    conn.execute("\n".join(lines))  # type: ignore[call-overload]


def recorded_rows() -> list[dict[str, Any]]:
    """The rows dramatiq-pg 0.12.0 wrote (fixtures/dramatiq_pg/recorded_rows.json)."""
    return json.loads((FIXTURES / "recorded_rows.json").read_text())


def sent(
    actor: str,
    *args: Any,
    queue: str = "receipts",
    kwargs: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    delay_ms: int | None = None,
    state: str = "queued",
) -> dict[str, Any]:
    """A row as dramatiq-pg leaves it after ``actor.send_with_options(...)`` (then
    CONSUME_ONE: consumed, NACK: rejected, ACK: done)."""
    now_ms = int(time.time() * 1000)
    options = dict(options or {})
    if delay_ms:  # PostgresBroker.enqueue: the delay queue's name and an eta
        queue = f"{queue}.DQ"
        options["eta"] = now_ms + delay_ms
    message_id = str(uuid.uuid4())
    message = {
        "queue_name": queue,
        "actor_name": actor,
        "args": list(args),
        "kwargs": kwargs or {},
        "options": options,
        "message_id": message_id,
        "message_timestamp": now_ms,
    }
    return {
        "message_id": message_id,
        "queue_name": queue,
        "state": state,
        "mtime": None,
        "message": message,
        "result": None,
        "result_ttl": None,
    }


def insert_rows(
    conn: psycopg.Connection[Any],
    rows: list[dict[str, Any]],
    schema: str = "dramatiq",
    prefix: str = "",
) -> None:
    """Store rows in dramatiq-pg's table (a raw ``message`` is stored as it is: the
    tests' malformed rows)."""
    statement = sql.SQL(
        "INSERT INTO {} (message_id, queue_name, state, mtime, message, result, result_ttl)"
        " VALUES (%s, %s, %s, coalesce(%s::timestamptz, now()), %s, %s, %s::timestamptz)"
    ).format(sql.Identifier(schema, f"{prefix}queue"))
    with conn.cursor() as cur:
        cur.executemany(
            statement,
            [
                (
                    r["message_id"],
                    r["queue_name"],
                    r["state"],
                    r["mtime"],
                    _jsonb(r["message"]),
                    _jsonb(r["result"]),
                    r["result_ttl"],
                )
                for r in rows
            ],
        )


class RawJson(str):
    """A message stored as this JSON text, whatever it holds (``'"text"'``, ``'[1]'``)."""


def _jsonb(value: Any) -> Any:
    if value is None or isinstance(value, RawJson):
        return value  # SQL NULL, or JSON text that PostgreSQL casts to jsonb
    return Jsonb(value)
