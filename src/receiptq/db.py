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
import os
import re
import secrets
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Literal, LiteralString, cast

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

# Re-exported: receiptq.db is where callers look for the one-line database errors.
from receiptq.db_errors import database_error as database_error
from receiptq.db_errors import describe_database as describe_database
from receiptq.db_errors import explain_error as explain_error
from receiptq.db_errors import explained as explained
from receiptq.errors import ConfigError, shorten
from receiptq.settings import pooler_from_env

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)

logger = logging.getLogger(__name__)


def _parse_queries(text: str) -> dict[str, str]:
    """Split a .sql file into {name: statement} at its ``-- name:`` lines."""
    parts = _NAME_LINE.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def _load_queries(folder: Traversable, queries: dict[str, str]) -> dict[str, str]:
    """Add the named queries of a folder's ``.sql`` files to ``queries``."""
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, statement in _parse_queries(entry.read_text()).items():
                if queries.get(name, statement) != statement:
                    raise RuntimeError(f"query {name!r} is defined twice")
                queries[name] = statement
    return queries


QUERIES: dict[str, str] = _load_queries(resources.files("receiptq.schema") / "queries", {})


def add_queries(folder: Traversable) -> None:
    """Make the named queries of a folder's ``.sql`` files callable by name: the tools'
    own queries (receiptq.tools), kept out of the production namespace."""
    _load_queries(folder, QUERIES)


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


# -- how connections reach PostgreSQL: directly, or through a pooler -------------------

#: ``session``: direct connections, or a pooler in session mode (the default): prepared
#: statements, session settings and LISTEN. ``transaction``: a pooler in transaction mode
#: (PgBouncer ``pool_mode = transaction``, Supavisor, RDS Proxy...): none of them.
PoolerMode = Literal["session", "transaction"]
POOLER_MODES: tuple[PoolerMode, ...] = ("session", "transaction")
#: Mode set for a URL by PostgresBroker(pooler=...), or for every URL ("") by --pooler.
_pooler_modes: dict[str, PoolerMode] = {}
#: URLs whose session mode was checked in this process (:func:`check_pooler`).
_pooler_checked: set[str] = set()
_pooler_lock = threading.Lock()
#: How long the pooler check waits for its own notification (s). A direct connection
#: gets it within milliseconds; through a transaction pooler it never comes.
POOLER_PROBE_WAIT_S = 2.0


def pooler_mode(value: str, setting: str = "RECEIPTQ_POOLER") -> PoolerMode:
    """A pooler mode from a setting's text; ConfigError naming the setting otherwise."""
    mode = value.strip().lower()
    if mode not in POOLER_MODES:
        raise ConfigError(f"{setting} must be session or transaction, got {shorten(value, 40)!r}")
    return cast(PoolerMode, mode)


def use_pooler(mode: str, url: str | None = None, *, setting: str = "pooler") -> PoolerMode:
    """Connect to ``url`` (every URL when None) in this pooler mode from now on in this
    process, whatever RECEIPTQ_POOLER says (PostgresBroker(pooler=...), ``--pooler``)."""
    checked = pooler_mode(mode, setting)
    with _pooler_lock:
        _pooler_modes["" if url is None else url] = checked
    return checked


def pooler(url: str) -> PoolerMode:
    """How connections to ``url`` go: as set with :func:`use_pooler`, else
    ``RECEIPTQ_POOLER`` (default ``session``)."""
    mode = _pooler_modes.get(url) or _pooler_modes.get("")
    if mode is not None:
        return mode
    return pooler_mode(pooler_from_env())


def listens(url: str) -> bool:
    """Whether LISTEN can be used on ``url`` (not behind a transaction pooler)."""
    return pooler(url) == "session"


def connect_kwargs(url: str) -> dict[str, Any]:
    """What every connection to ``url`` is opened with for its pooler mode: in
    ``transaction`` mode, no server-side prepared statements (psycopg prepares a
    statement after its 5th run on a connection; through a transaction pooler the
    next run may land on a server session that never saw it)."""
    return {"prepare_threshold": None} if pooler(url) == "transaction" else {}


def connect(
    url: str, *, autocommit: bool = True, **kwargs: Any
) -> psycopg.Connection[dict[str, Any]]:
    """One connection whose rows are dicts (autocommit unless told), opened as the
    pooler mode of ``url`` needs (:func:`connect_kwargs`). Every connection receiptq
    opens comes from here or from :func:`open_pool`. In ``session`` mode the first
    connection of the process to a URL checks that no transaction pooler answers
    (:func:`check_pooler`)."""
    options = {"row_factory": dict_row, **connect_kwargs(url), **kwargs}
    conn = psycopg.connect(url, autocommit=autocommit, **options)
    try:
        check_pooler(url, conn)
    except BaseException:
        conn.close()
        raise
    return conn


def check_pooler(url: str, conn: psycopg.Connection[Any] | None = None) -> None:
    """Refuse (ConfigError) a ``session`` mode URL answered by a pooler in transaction
    mode, where prepared statements and LISTEN would fail at random, once per process
    and URL. ``conn``: a connection just opened to ``url`` to check with.

    Cheap: when the server sees the connection come from the client's own address
    and port, nothing sits in between (one query). Otherwise (a Unix socket, a
    pooler, a proxy) a LISTEN on one connection and a NOTIFY from another must meet
    within :data:`POOLER_PROBE_WAIT_S`, as they do directly and through a session
    pooler; through a transaction pooler the notification never comes back."""
    if url in _pooler_checked or pooler(url) != "session":
        return
    if conn is None:
        with psycopg.connect(url, autocommit=True, **connect_timeout(url)) as own:
            _check_pooler(url, own)
    else:
        _check_pooler(url, conn)
    with _pooler_lock:
        _pooler_checked.add(url)


def _check_pooler(url: str, conn: psycopg.Connection[Any]) -> None:
    if _direct(conn):
        return
    if not _notify_comes_back(url):
        raise ConfigError(
            f"the database at {describe_database(url)} is reached through a pooler in "
            "transaction mode (a LISTEN there never hears its NOTIFY): set "
            "RECEIPTQ_POOLER=transaction"
        )


def _direct(conn: psycopg.Connection[Any]) -> bool:
    """The server sees this TCP connection come from our own address and port."""
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        ours = sock.getsockname()
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query("pooler_probe_peer")).fetchone()
    if not conn.autocommit:
        conn.rollback()
    if row is None or row["addr"] is None:
        return False
    return (str(row["addr"]), row["port"]) == (ours[0].removeprefix("::ffff:"), ours[1])


def _notify_comes_back(url: str) -> bool:
    """A NOTIFY from one connection reaches a LISTEN on another (True too when that
    cannot be tried, e.g. on a read-only standby: nothing is refused on a guess)."""
    try:
        return _probe_notify(url)
    except psycopg.Error as exc:
        logger.debug("pooler check skipped: %s", exc)
        return True


def _probe_notify(url: str) -> bool:
    channel = f"receiptq_pooler_probe_{os.getpid()}_{secrets.token_hex(4)}"
    options = {"autocommit": True, "prepare_threshold": None, **connect_timeout(url)}
    with psycopg.connect(url, **options) as listener:
        listener.execute(statement("pooler_probe_listen", {"channel": (channel,)}))
        with psycopg.connect(url, **options) as other:
            other.execute(query("pooler_probe_notify"), {"channel": channel})
        # Consumed whole: the generator holds the connection's lock until it ends.
        heard = list(listener.notifies(timeout=POOLER_PROBE_WAIT_S, stop_after=1))
        return any(n.channel == channel for n in heard)


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

    Opened as the pooler mode of ``url`` needs (:func:`connect_kwargs`); in
    ``transaction`` mode without ``generic_plans``' session setting.

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

    check_connection(url)
    pooled = pooler(url) == "transaction"
    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs={
            "autocommit": True,
            "row_factory": dict_row,
            **connect_kwargs(url),
            **connect_timeout(url),
        },
        # Behind a transaction pooler a session SET would land on one server session
        # and leak to the pooler's other clients; and with no prepared statements
        # there is no plan cache for it to steer.
        configure=configure if generic_plans and not pooled else None,
        name=name,
        open=False,
        reconnect_timeout=POOL_RECONNECT_S,
    )
    pool.open(wait=wait, timeout=30)
    return pool


def check_connection(url: str) -> None:
    """Connect once, so that a database that cannot be reached fails now with one
    line (DatabaseUnreachable), not after a pool's wait of 30 s."""
    try:
        with psycopg.connect(url, **connect_kwargs(url), connect_timeout=CONNECT_TIMEOUT_S) as conn:
            check_pooler(url, conn)
    except psycopg.Error as exc:
        error = database_error(exc, url)
        if error is None:
            raise
        raise error from None


Params = dict[str, Any] | None
#: Identifiers for a query's ``{placeholders}``: {"source": ("schema", "table")}.
Identifiers = Mapping[str, Sequence[str]] | None


def statement(name: str, identifiers: Identifiers = None) -> LiteralString | sql.Composed:
    """A named query; its ``{placeholders}``, if any, filled with identifiers (e.g.
    another tool's schema and table) that psycopg quotes, never formatted by hand."""
    if identifiers is None:
        return query(name)
    quoted = {key: sql.Identifier(*parts) for key, parts in identifiers.items()}
    return sql.SQL(query(name)).format(**quoted)


def fetch_all(
    conn: psycopg.Connection[Any], name: str, params: Params = None, identifiers: Identifiers = None
) -> list[dict[str, Any]]:
    """Run a named query; its rows as dicts (whatever the connection's row factory)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(statement(name, identifiers), params or {}).fetchall()


def fetch_one(
    conn: psycopg.Connection[Any], name: str, params: Params = None
) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query(name), params or {}).fetchone()


def copy_in(conn: psycopg.Connection[Any], name: str, rows: Iterable[Sequence[Any]]) -> int:
    """Run a named ``COPY ... FROM STDIN`` with ``rows`` (tuples in its column
    order); return how many rows it stored."""
    with conn.cursor() as cur:
        with cur.copy(query(name)) as copy:
            for row in rows:
                copy.write_row(row)
        return cur.rowcount


def execute(
    conn: psycopg.Connection[Any], name: str, params: Params = None, identifiers: Identifiers = None
) -> int:
    """Run a named statement; return the number of rows it touched."""
    with conn.cursor() as cur:
        return cur.execute(statement(name, identifiers), params or {}).rowcount


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
    with connect(url, autocommit=False) as conn, conn.transaction():
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
