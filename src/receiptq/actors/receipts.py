"""The receipt pipeline's actors: OCR -> matching -> email (logic in receiptq.services).

The app calls one function, :func:`submit_receipt` (store the image and the row,
and start the pipeline, in one transaction), or :func:`process_receipt` for a
receipt it stored itself. The pipeline passes each step's result on:
``ocr_receipt`` returns the receipt id to ``match_receipt``, which returns the
email's context to ``send_email``. Every actor is idempotent (delivery is
at-least-once). OCR and email go through their services' circuit breakers: while
one is open, those jobs are postponed without using an attempt.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import psycopg

from receiptq import db
from receiptq.actors import broker
from receiptq.broker import PostgresBroker
from receiptq.middleware import add_app_middleware, receiptq_middleware
from receiptq.services import receipts

#: Queues of the three steps.
OCR_QUEUE = "ocr"
MATCHING_QUEUE = "matching"
EMAIL_QUEUE = "email"
#: OCR jobs one worker process holds at most (claimed and not finished). Local
#: RapidOCR already uses the process's share of the cores for one image: a second
#: job would only wait in that process while another process sits idle. A hosted
#: OCR service (RECEIPTQ_OCR_URL) waits on the network: Dramatiq's prefetch then.
#: `receiptq queue prefetch ocr N` overrides this for every worker.
OCR_PREFETCH = None if os.environ.get("RECEIPTQ_OCR_URL", "").strip() else 1


@dramatiq.actor(
    queue_name=OCR_QUEUE,
    prefetch=OCR_PREFETCH,
    breakers=("ocr",),
    max_retries=5,
    min_backoff_ms=500,
    max_backoff_ms=60_000,
)
def ocr_receipt(receipt_id: int) -> int:
    """Read an uploaded receipt's merchant, date, total and currency; the receipt id."""
    with broker.connection() as conn:
        receipts.read_receipt(conn, receipt_id)
    return receipt_id


@dramatiq.actor(queue_name=MATCHING_QUEUE, max_retries=5, min_backoff_ms=200, max_backoff_ms=30_000)
def match_receipt(receipt_id: int) -> dict[str, Any]:
    """Match a read receipt to a bank transaction; the context of the email to send."""
    with broker.connection() as conn:
        return receipts.match_receipt(conn, receipt_id)


@dramatiq.actor(
    queue_name=EMAIL_QUEUE,
    breakers=("email",),
    max_retries=8,
    min_backoff_ms=500,
    max_backoff_ms=300_000,
)
def send_email(user_id: int, template: str, context: dict[str, Any]) -> bool:
    """Render a template and email it to a user (once); True when sent by this run."""
    with broker.connection() as conn:
        return receipts.send_email(conn, user_id, template, context)


RECEIPT_ACTORS = (ocr_receipt, match_receipt, send_email)


def receipt_broker(url: str) -> PostgresBroker:
    """A broker on ``url`` with the receipt actors declared as the workers declare
    them: for sending to another database than the one this process's workers use
    (the CLI's ``--url``, the demo, tests). Close it when done."""
    other = PostgresBroker(url, middleware=receiptq_middleware())
    add_app_middleware(other)
    for actor in RECEIPT_ACTORS:
        dramatiq.Actor(
            actor.fn,
            broker=other,
            actor_name=actor.actor_name,
            queue_name=actor.queue_name,
            priority=actor.priority,
            options=dict(actor.options),
        )
    return other


def process_receipt(
    receipt_id: int,
    user_id: int,
    *,
    tier: str | None = None,
    broker: PostgresBroker = broker,
    job_options: dict[str, Any] | None = None,
) -> None:
    """Start a stored receipt's pipeline (inside ``broker.transaction(conn)`` to make
    it part of the caller's transaction). ``job_options`` are added to every step's
    message options (e.g. ``max_backoff_ms``, which wins over the actors' own)."""
    options: dict[str, Any] = {**(job_options or {}), "user_id": str(user_id)}
    if tier is not None:
        options["tier"] = tier
    dramatiq.pipeline(
        [
            ocr_receipt.message_with_options(args=(receipt_id,), **options),
            match_receipt.message_with_options(**options),
            send_email.message_with_options(args=(user_id, receipts.RECEIPT_TEMPLATE), **options),
        ],
        broker=broker,
    ).run()


def submit_receipt(
    user_id: int | str,
    image_bytes: bytes,
    conn: psycopg.Connection[Any] | None = None,
    *,
    broker: PostgresBroker = broker,
    job_options: dict[str, Any] | None = None,
) -> int:
    """Store a receipt image for a user and start its pipeline, atomically; its id.

    With ``conn``, everything happens in that connection's transaction (a savepoint
    if one is open): if the caller rolls back, neither the receipt nor its jobs exist.

    ``user_id`` may also be the user's email. ``broker`` defaults to the workers'.

    Raises:
      UnknownUser: no such user (nothing is stored).
      ValueError: the image is empty or too large (nothing is stored).
    """
    if conn is None:
        with db.connect(broker.url) as own:
            return submit_receipt(user_id, image_bytes, own, broker=broker, job_options=job_options)
    with conn.transaction(), broker.transaction(conn):
        user = receipts.get_user(conn, user_id)
        receipt_id = receipts.store_receipt(conn, user["id"], image_bytes)
        process_receipt(
            receipt_id, user["id"], tier=user["tier"], broker=broker, job_options=job_options
        )
    return receipt_id
