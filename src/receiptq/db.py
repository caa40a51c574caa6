"""The only module that talks SQL: named queries, connection pools, migrations.

Queries live in ``schema/queries/*.sql`` as blocks that start with
``-- name: <query_name>``; they are parsed once, at import. Migrations come in
two chains, each a folder of ``NNNN_name.sql`` files applied in order and each
with its own record of the files applied: the queue's (:data:`QUEUE_CHAIN`,
``schema/migrations``, recorded in ``receiptq.migrations``), which every
deployment applies, and the receipt app's (:data:`RECEIPTS_CHAIN`,
``schema/receipts_migrations``, recorded in ``receiptq_app.migrations``), which
only the receipt app and the demo apply, after the queue's. :func:`migrate`
holds an advisory lock so that several processes can run it at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, LiteralString, cast

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)

logger = logging.getLogger(__name__)


def _parse_queries(text: str) -> dict[str, str]:
    """Split a .sql file into {name: statement} at its ``-- name:`` lines."""
    parts = _NAME_LINE.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def _load_queries() -> dict[str, str]:
    queries: dict[str, str] = {}
    folder = resources.files("receiptq.schema") / "queries"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, statement in _parse_queries(entry.read_text()).items():
                if name in queries:
                    raise RuntimeError(f"query {name!r} is defined twice")
                queries[name] = statement
    return queries


QUERIES: dict[str, str] = _load_queries()


def query(name: str) -> LiteralString:
    """The SQL text of a named query (a KeyError names an unknown query)."""
    return cast(LiteralString, QUERIES[name])


@dataclass(frozen=True)
class Chain:
    """A chain of migrations: a folder of ``NNNN_name.sql`` files, and the named
    queries that create its record of applied files, read it and add to it."""

    name: str
    folder: Traversable
    bootstrap: str
    applied: str
    record: str
    #: The table of its record (created by ``bootstrap``).
    table: str


_SCHEMA = resources.files("receiptq.schema")
#: The queue's objects, schema ``receiptq``: what ``receiptq db migrate`` applies. The
#: record may name files this package no longer ships (``0005_receipts_app`` of 0.1
#: moved to the receipt app's chain): they are ignored.
QUEUE_CHAIN = Chain(
    "queue", _SCHEMA / "migrations",
    "migration_bootstrap", "migration_applied", "migration_record", "receiptq.migrations",
)  # fmt: skip
#: The receipt app's tables, schema ``receiptq_app`` (``receiptq receipts migrate``,
#: the demo): applied after the queue's chain, whose tables its queries join.
RECEIPTS_CHAIN = Chain(
    "receipts", _SCHEMA / "receipts_migrations",
    "receipts_migration_bootstrap", "receipts_migration_applied", "receipts_migration_record",
    "receiptq_app.migrations",
)  # fmt: skip


def migration_files(chain: Chain = QUEUE_CHAIN) -> list[tuple[str, str]]:
    """A chain's migrations as (name, sql), in the order they apply."""
    names = sorted(e.name for e in chain.folder.iterdir() if re.match(r"^\d{4}_\w+\.sql$", e.name))
    return [(name[:-4], (chain.folder / name).read_text()) for name in names]


def connect(url: str, **kwargs: Any) -> psycopg.Connection[dict[str, Any]]:
    """One autocommit connection whose rows are dicts."""
    return psycopg.connect(url, autocommit=True, row_factory=dict_row, **kwargs)


def open_pool(
    url: str, *, max_size: int, name: str = "receiptq", generic_plans: bool = False
) -> ConnectionPool:
    """A pool of autocommit connections with dict rows, opened and ready.

    ``generic_plans``: the sessions plan their prepared statements once
    (``plan_cache_mode = force_generic_plan``) instead of letting PostgreSQL's
    heuristic re-plan them on every execution. Only for pools whose statements
    are all index-driven with no ``%(x)s IS NULL OR ...`` filters (the broker's):
    there, re-planning the claim cost more than running it (measured: claims
    15-30 % faster with generic plans).
    """

    def configure(conn: psycopg.Connection[Any]) -> None:
        try:
            conn.execute("SET plan_cache_mode = force_generic_plan")
        except psycopg.Error:  # PostgreSQL < 12: the default heuristic, then
            logger.info("plan_cache_mode is not supported by this server", exc_info=True)

    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True, "row_factory": dict_row},
        configure=configure if generic_plans else None,
        name=name,
        open=False,
    )
    pool.open(wait=True, timeout=30)
    return pool


Params = dict[str, Any] | None


def fetch_all(
    conn: psycopg.Connection[Any], name: str, params: Params = None
) -> list[dict[str, Any]]:
    """Run a named query; its rows as dicts (whatever the connection's row factory)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query(name), params or {}).fetchall()


def fetch_one(
    conn: psycopg.Connection[Any], name: str, params: Params = None
) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query(name), params or {}).fetchone()


def execute(conn: psycopg.Connection[Any], name: str, params: Params = None) -> int:
    """Run a named statement; return the number of rows it touched."""
    with conn.cursor() as cur:
        return cur.execute(query(name), params or {}).rowcount


def execute_many(
    conn: psycopg.Connection[Any], name: str, params: Iterable[dict[str, Any]]
) -> None:
    """Run a named statement once per parameter set, pipelined in one round trip."""
    with conn.cursor() as cur:
        cur.executemany(query(name), list(params))


def migrate(url: str, chain: Chain = QUEUE_CHAIN) -> list[str]:
    """Apply a chain's migrations not applied yet; return their names. Idempotent.

    Everything runs in one transaction under an advisory lock (one lock for every
    chain), so two processes migrating at once apply each file exactly once, and a
    failing migration leaves the database as it was.
    """
    applied_now: list[str] = []
    with psycopg.connect(url, row_factory=dict_row) as conn, conn.transaction():
        conn.execute(query("migration_lock"))
        conn.execute(query(chain.bootstrap))
        done = {row["name"] for row in fetch_all(conn, chain.applied)}
        for name, sql in migration_files(chain):
            if name in done:
                continue
            conn.execute(cast(LiteralString, sql))
            conn.execute(query(chain.record), {"name": name})
            applied_now.append(name)
    return applied_now


def applied_migrations(url: str, chain: Chain = QUEUE_CHAIN) -> list[str]:
    """The names a chain's record holds ([] when it has none yet)."""
    with connect(url) as conn:
        row = fetch_one(conn, "migration_table_exists", {"table": chain.table})
        if row is None or not row["present"]:
            return []
        return [row["name"] for row in fetch_all(conn, chain.applied)]
