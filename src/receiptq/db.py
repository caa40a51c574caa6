"""The only module that talks SQL: named queries, connection pools, migrations.

Queries live in ``schema/queries/*.sql`` as blocks that start with
``-- name: <query_name>``; they are parsed once, at import. Migrations are the
files ``schema/migrations/NNNN_name.sql``, applied in order, each recorded in
``receiptq.migrations``; :func:`migrate` holds an advisory lock so that several
processes can run it at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from importlib import resources
from typing import Any, LiteralString, cast

import psycopg
from psycopg.conninfo import conninfo_to_dict
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


def migration_files() -> list[tuple[str, str]]:
    """All migrations as (name, sql), in the order they apply."""
    folder = resources.files("receiptq.schema") / "migrations"
    names = sorted(e.name for e in folder.iterdir() if re.match(r"^\d{4}_\w+\.sql$", e.name))
    return [(name[:-4], (folder / name).read_text()) for name in names]


def connect(url: str, **kwargs: Any) -> psycopg.Connection[dict[str, Any]]:
    """One autocommit connection whose rows are dicts."""
    return psycopg.connect(url, autocommit=True, row_factory=dict_row, **kwargs)


#: How long one connection attempt may take when the URL does not say (s): a host that
#: drops packets would otherwise hold a caller for the system's TCP timeout (minutes).
CONNECT_TIMEOUT_S = 5
#: How long the pool keeps retrying a lost connection on its own, with its growing
#: pauses (1, 2, 4 s...), before it leaves reconnecting to the next caller's demand (s).
#: Short, so that once the database is back the next caller connects at once instead of
#: waiting out a pause that grew during a long outage.
POOL_RECONNECT_S = 3.0


def connect_timeout(url: str) -> dict[str, Any]:
    """``connect_timeout`` for psycopg.connect, unless the URL sets its own."""
    try:
        if conninfo_to_dict(url).get("connect_timeout"):
            return {}
    except psycopg.ProgrammingError:
        pass  # psycopg.connect says what is wrong with the URL
    return {"connect_timeout": CONNECT_TIMEOUT_S}


def open_pool(
    url: str,
    *,
    max_size: int,
    name: str = "receiptq",
    generic_plans: bool = False,
    wait: bool = True,
) -> ConnectionPool:
    """A pool of autocommit connections with dict rows, opened (and, with ``wait``, ready).

    ``generic_plans``: the sessions plan their prepared statements once
    (``plan_cache_mode = force_generic_plan``) instead of letting PostgreSQL's
    heuristic re-plan them on every execution. Only for pools whose statements
    are all index-driven with no ``%(x)s IS NULL OR ...`` filters (the broker's):
    there, re-planning the claim cost more than running it (measured: claims
    15-30 % faster with generic plans).

    ``wait=False`` returns at once and connects in the background (a worker that
    starts while the database is down must still stop promptly): callers then bound
    their own waits with ``pool.connection(timeout=...)``.
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
        kwargs={"autocommit": True, "row_factory": dict_row, **connect_timeout(url)},
        configure=configure if generic_plans else None,
        name=name,
        open=False,
        reconnect_timeout=POOL_RECONNECT_S,
    )
    pool.open(wait=wait, timeout=30)
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


def migrate(url: str) -> list[str]:
    """Apply the migrations not applied yet; return their names. Idempotent.

    Everything runs in one transaction under an advisory lock, so two processes
    migrating at once apply each file exactly once, and a failing migration
    leaves the database as it was.
    """
    applied_now: list[str] = []
    with psycopg.connect(url, row_factory=dict_row) as conn, conn.transaction():
        conn.execute(query("migration_lock"))
        conn.execute(query("migration_bootstrap"))
        done = {row["name"] for row in fetch_all(conn, "migration_applied")}
        for name, sql in migration_files():
            if name in done:
                continue
            conn.execute(cast(LiteralString, sql))
            conn.execute(query("migration_record"), {"name": name})
            applied_now.append(name)
    return applied_now


def applied_migrations(url: str) -> list[str]:
    with connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('receiptq.migrations') AS t").fetchone()
        if not exists or exists["t"] is None:
            return []
        return [row["name"] for row in fetch_all(conn, "migration_applied")]
