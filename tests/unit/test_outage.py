"""The worker side's reading of database errors, its pauses, and what it says (pure:
no database)."""

from __future__ import annotations

import logging
import time

import psycopg
import pytest
from psycopg import errors
from psycopg_pool import PoolTimeout

from receiptq.errors import DatabaseNotMigrated, DatabaseUnreachable
from receiptq.pg.outage import (
    NOT_MIGRATED,
    SETTLE_S,
    UNREACHABLE,
    Backoff,
    DatabaseWatch,
    database_problem,
    server_of,
)

URL = "postgresql://app:secret@db.internal:6543/receipts"


@pytest.mark.parametrize(
    ("exc", "problem"),
    [
        (psycopg.OperationalError("connection refused"), UNREACHABLE),
        (PoolTimeout("couldn't get a connection after 2.00 sec"), UNREACHABLE),
        (errors.AdminShutdown("terminating connection"), UNREACHABLE),
        (errors.CannotConnectNow("the database system is starting up"), UNREACHABLE),
        (errors.UndefinedTable('relation "receiptq.queue_settings" does not exist'), NOT_MIGRATED),
        (errors.UndefinedColumn('column "prefetch" does not exist'), NOT_MIGRATED),
        (DatabaseUnreachable("cannot reach the database at db:5432/app"), UNREACHABLE),
        (DatabaseNotMigrated("the database at db:5432/app is not migrated"), NOT_MIGRATED),
        (errors.DeadlockDetected("deadlock detected"), None),
        (errors.QueryCanceled("canceling statement due to statement timeout"), None),
        (errors.UniqueViolation("duplicate key"), None),
        (ValueError("a bug"), None),
    ],
)
def test_errors_that_mean_the_database_is_gone_or_not_migrated_are_told_apart(exc, problem):
    assert database_problem(exc) == problem


def test_pauses_grow_to_their_ceiling_and_start_over_after_a_success():
    pauses = Backoff(0.1, 1.0)
    assert [pauses.next() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    pauses.reset()
    assert pauses.next() == 0.1


def test_server_is_named_without_the_password():
    assert server_of(URL) == "db.internal:6543/receipts"


def test_watch_says_once_that_the_database_is_gone_and_once_that_it_is_back(caplog):
    watch = DatabaseWatch(URL)
    with caplog.at_level(logging.WARNING, logger="receiptq.pg.outage"):
        for _ in range(5):
            assert watch.failed(psycopg.OperationalError("connection refused"))
        watch.answered(time.monotonic() - 1)  # began before the outage: proves nothing
        assert watch.problem == UNREACHABLE
        watch.answered(time.monotonic() + SETTLE_S)
        watch.answered(time.monotonic() + SETTLE_S)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("waiting for the database at db.internal:6543/receipts")
    assert "secret" not in lines[0]
    assert "answers again" in lines[1]
    assert watch.problem is None


def test_a_wait_begun_during_the_outage_that_fails_after_it_does_not_open_another(caplog):
    watch = DatabaseWatch(URL)
    with caplog.at_level(logging.WARNING, logger="receiptq.pg.outage"):
        assert watch.failed(psycopg.OperationalError("connection refused"))
        waiting_since = time.monotonic()  # e.g. a wait for a pooled connection
        watch.answered(time.monotonic() + SETTLE_S)  # another part got through
        assert watch.failed(PoolTimeout("couldn't get a connection"), waiting_since)
        assert watch.problem is None
        later = time.monotonic() + SETTLE_S
        assert watch.failed(psycopg.OperationalError("connection refused"), later)
        assert watch.problem == UNREACHABLE  # a failure begun after it was back: a new one
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" ")[:3] for line in lines] == [
        ["waiting", "for", "the"],
        ["the", "database", "at"],
        ["waiting", "for", "the"],
    ]


def test_watch_tells_to_migrate_and_leaves_other_errors_to_the_caller(caplog):
    watch = DatabaseWatch(URL)
    with caplog.at_level(logging.WARNING, logger="receiptq.pg.outage"):
        assert not watch.failed(errors.UniqueViolation("duplicate key"))
        assert watch.failed(errors.UndefinedTable('relation "receiptq.jobs" does not exist'))
        assert watch.failed(errors.UndefinedTable('relation "receiptq.jobs" does not exist'))
    [line] = [r.getMessage() for r in caplog.records]
    assert "is not migrated" in line and "run `receiptq db migrate`" in line


def test_psycopg_line_for_a_pipeline_on_a_lost_connection_is_left_to_the_watch(caplog):
    DatabaseWatch(URL)  # a worker process's watch: installs the filter
    psycopg_logger = logging.getLogger("psycopg")
    with caplog.at_level(logging.WARNING, logger="psycopg"):
        lost = psycopg.OperationalError("the connection is lost")
        psycopg_logger.warning("error ignored terminating %r: %s", "<Pipeline>", lost)
        other = psycopg.OperationalError("something else")
        psycopg_logger.warning("error ignored terminating %r: %s", "<Pipeline>", other)
    assert [r.getMessage() for r in caplog.records] == [
        "error ignored terminating '<Pipeline>': something else"
    ]
