"""The library's errors are one line that says what to do: a send to a database that is
not migrated, or that cannot be reached, raises receiptq's error, not a driver traceback."""

from __future__ import annotations

import time
import traceback

import dramatiq
import psycopg
import pytest
from dramatiq.errors import BrokerError
from psycopg.conninfo import conninfo_to_dict

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.errors import DatabaseNotMigrated, DatabaseUnreachable
from tests_support import free_port


@pytest.fixture
def unmigrated_broker(empty_database_url):
    broker = PostgresBroker(empty_database_url)
    dramatiq.set_broker(broker)
    yield broker
    broker.close()


def where(url: str) -> str:
    params = conninfo_to_dict(url)
    return f"{params['host']}:{params.get('port', 5432)}/{params['dbname']}"


def assert_one_line_without_the_driver(error: BaseException, message: str) -> None:
    assert str(error) == message
    printed = "".join(traceback.format_exception(error))
    assert "psycopg" not in printed and "UndefinedTable" not in printed


def test_sending_before_migrating_raises_not_migrated_in_one_line(
    unmigrated_broker, empty_database_url
):
    @dramatiq.actor(queue_name="ocr")
    def ocr_receipt(receipt_id):
        pass

    with pytest.raises(DatabaseNotMigrated) as caught:
        ocr_receipt.send(42)

    expected = (
        f"the database at {where(empty_database_url)} is not migrated: run `receiptq db migrate`"
    )
    assert_one_line_without_the_driver(caught.value, expected)
    assert isinstance(caught.value, BrokerError)  # what Dramatiq code expects of a broker
    # The driver's error stays reachable for debugging.
    assert isinstance(caught.value.__context__, psycopg.errors.UndefinedTable)


def test_bulk_and_transactional_sends_before_migrating_raise_not_migrated(
    unmigrated_broker, empty_database_url
):
    @dramatiq.actor(queue_name="ocr")
    def ocr_receipt(receipt_id):
        pass

    with pytest.raises(DatabaseNotMigrated, match="receiptq db migrate"):
        unmigrated_broker.enqueue_many([ocr_receipt.message(n) for n in range(3)])
    with psycopg.connect(empty_database_url) as conn, conn.transaction():
        with pytest.raises(DatabaseNotMigrated), unmigrated_broker.transaction(conn):
            ocr_receipt.send(1)


def test_sending_to_an_unreachable_database_says_where_and_what_to_check_at_once():
    port = free_port()
    url = f"postgresql://app:s3cret@127.0.0.1:{port}/app"
    broker = PostgresBroker(url)
    broker.declare_queue("ocr")
    message = dramatiq.Message(
        queue_name="ocr", actor_name="ocr_receipt", args=(1,), kwargs={}, options={}
    )
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnreachable) as caught:
            broker.enqueue(message)
    finally:
        broker.close()
    assert time.monotonic() - started < 10  # not the pool's 30 s wait
    assert_one_line_without_the_driver(
        caught.value,
        f"cannot reach the database at 127.0.0.1:{port}/app (connection refused): check that "
        "PostgreSQL is running there and that the URL's host and port are right",
    )
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("dbname", "user", "words"),
    [
        (
            "receiptq_no_such_db",
            "postgres",
            "there is no database receiptq_no_such_db on the PostgreSQL at",
        ),
        ("postgres", "receiptq_no_such_user", "has no user receiptq_no_such_user"),
    ],
)
def test_a_missing_database_or_user_is_named(pg_admin_url, dbname, user, words):
    params = conninfo_to_dict(pg_admin_url)
    url = psycopg.conninfo.make_conninfo(pg_admin_url, dbname=dbname, user=user, password="s3cret")
    with pytest.raises(psycopg.OperationalError) as caught:
        db.connect(url)
    line = db.explain_error(caught.value, url)
    assert line is not None and words in line and "s3cret" not in line
    assert f"{params['host']}:" in line


def test_errors_that_are_not_about_the_database_are_not_explained():
    assert db.explain_error(ValueError("a bug"), "postgresql://h/db") is None
    assert db.explain_error(psycopg.errors.UniqueViolation("dup"), "postgresql://h/db") is None
