"""Test fixtures: a real PostgreSQL, a fresh database per test.

The server is the one at ``RECEIPTQ_TEST_ADMIN_URL`` (default: 127.0.0.1:5432,
user postgres). When nothing answers there, an embedded PostgreSQL (pgserver)
is started in a temporary directory for the session, so the suite runs on a
machine with nothing but Python.

Each test that asks for ``database_url`` gets a database of its own, cloned from
a template that has every migration of both chains applied (the queue's and the
receipt app's; built once per session).

The tests are in folders by kind, each its marker (``pytest -m unit``): ``unit``
(no database, no processes: seconds), ``integration`` (a real PostgreSQL) and
``processes`` (real ``dramatiq`` worker processes, servers restarted, a browser).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from receiptq import db
from receiptq.broker import PostgresBroker

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

TESTS = Path(__file__).resolve().parent
#: The folders of tests/, each the marker of the tests in it (registered in pyproject.toml).
KINDS = ("unit", "integration", "processes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder's kind."""
    for item in items:
        kind = item.path.relative_to(TESTS).parts[0]
        if kind in KINDS:
            item.add_marker(kind)


def _answers(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser URL on a live server (the machine's, or an embedded one)."""
    url = os.environ.get("RECEIPTQ_TEST_ADMIN_URL", DEFAULT_ADMIN_URL)
    if _answers(url):
        yield url
        return
    import pgserver

    server = pgserver.get_server(
        tempfile.mkdtemp(prefix="receiptq-test-pg-"), cleanup_mode="delete"
    )
    yield server.get_uri()
    server.cleanup()


def _admin(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def database_url_for(admin_url: str, name: str) -> str:
    return make_conninfo(admin_url, dbname=name)


@pytest.fixture(scope="session")
def template_database(pg_admin_url: str) -> Iterator[str]:
    """A database with all migrations applied, used as the template of every test's database."""
    name = f"receiptq_tpl_{os.getpid()}"
    with _admin(pg_admin_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database_url_for(pg_admin_url, name)
    db.migrate(url)
    db.migrate(url, db.RECEIPTS_CHAIN)  # the receipt app's tables, for its tests
    yield name
    with _admin(pg_admin_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def empty_database_url(pg_admin_url: str) -> Iterator[str]:
    """A new, empty database (no migrations)."""
    name = f"receiptq_t_{uuid.uuid4().hex[:12]}"
    with _admin(pg_admin_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield database_url_for(pg_admin_url, name)
    with _admin(pg_admin_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def database_url(pg_admin_url: str, template_database: str) -> Iterator[str]:
    """A new database of this test's own, migrated (cloned from the template)."""
    name = f"receiptq_t_{uuid.uuid4().hex[:12]}"
    with _admin(pg_admin_url) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_database)
            )
        )
    yield database_url_for(pg_admin_url, name)
    with _admin(pg_admin_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection (dict rows) to the test's database, for assertions."""
    with db.connect(database_url) as connection:
        yield connection


@pytest.fixture
def broker(database_url: str) -> Iterator[PostgresBroker]:
    """A PostgresBroker on the test's database, set as Dramatiq's global broker."""
    broker = PostgresBroker(database_url, lease_s=5, poll_interval_ms=100, ack_flush_ms=2)
    dramatiq.set_broker(broker)
    yield broker
    broker.close()


@pytest.fixture
def worker(broker: PostgresBroker) -> Iterator[dramatiq.Worker]:
    """An in-process Dramatiq worker (4 threads) on the test broker."""
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    yield worker
    worker.stop()
