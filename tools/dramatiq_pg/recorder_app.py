"""Actors on dramatiq-pg (Dramatiq 1.x) whose runs leave rows in every state.

Imported by ``record_rows.py`` and by the ``dramatiq`` worker it starts; runs only
in a virtual environment with ``dramatiq<2``, ``dramatiq-pg`` and ``psycopg2-binary``
(see README.md), never in receiptq's own.
"""

import os
import time

import dramatiq
from dramatiq_pg import PostgresBroker

broker = PostgresBroker(url=os.environ["DRAMATIQ_PG_URL"])
dramatiq.set_broker(broker)

#: A backoff of a day: a retried message waits on the delay queue while we look.
DAY_MS = 86_400_000


@dramatiq.actor(queue_name="receipts", store_results=True)
def read_receipt(receipt_id: int, *, lang: str = "en") -> dict:
    return {"receipt_id": receipt_id, "lang": lang}


@dramatiq.actor(queue_name="receipts", max_retries=0)
def broken(receipt_id: int) -> None:
    raise ValueError(f"receipt {receipt_id} is unreadable")


@dramatiq.actor(queue_name="receipts", max_retries=3, min_backoff=DAY_MS, max_backoff=DAY_MS)
def flaky(receipt_id: int) -> None:
    raise ConnectionError(f"OCR service down for receipt {receipt_id}")


@dramatiq.actor(queue_name="emails")
def send_email(receipt_id: int) -> None:
    # Runs until its worker is killed: the message stays 'consumed'.
    while True:
        time.sleep(0.1)
