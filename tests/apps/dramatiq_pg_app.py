"""Actors named as in tests/fixtures/dramatiq_pg/recorded_rows.json, on receiptq:
the app after its switch from dramatiq-pg. Each run inserts a row into
test_imported_runs, so a test can count how many times each message ran."""

import os

import dramatiq
import psycopg
from dramatiq.middleware import CurrentMessage

from receiptq.broker import PostgresBroker

URL = os.environ["RECEIPTQ_DATABASE_URL"]
broker = PostgresBroker(URL)
broker.add_middleware(CurrentMessage())
dramatiq.set_broker(broker)


def _record(actor: str, receipt_id: int) -> None:
    message = CurrentMessage.get_current_message()
    assert message is not None
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO test_imported_runs (message_id, actor, receipt_id) VALUES (%s, %s, %s)",
            (message.message_id, actor, receipt_id),
        )


@dramatiq.actor(queue_name="receipts")
def read_receipt(receipt_id: int, lang: str = "en") -> None:
    _record("read_receipt", receipt_id)


@dramatiq.actor(queue_name="receipts")
def flaky(receipt_id: int) -> None:
    _record("flaky", receipt_id)


@dramatiq.actor(queue_name="emails")
def send_email(receipt_id: int) -> None:
    _record("send_email", receipt_id)
