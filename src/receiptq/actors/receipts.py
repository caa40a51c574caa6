"""The receipt pipeline's actors: OCR -> matching -> email (logic in receiptq.services).

The app calls one function, :func:`submit_receipt` (store the image and the row,
and start the pipeline, in one transaction), or :func:`process_receipt` for a
receipt it stored itself; :func:`retry_receipt` runs a stuck receipt again. The
pipeline passes each step's result on: ``ocr_receipt`` returns the receipt id to
``match_receipt``, which returns the email's context to ``send_email``. Every actor is idempotent (delivery is
at-least-once). OCR and email go through their services' circuit breakers: while
one is open, those jobs are postponed without using an attempt.

The queues are ``ocr``, ``matching`` and ``email``, each with the prefix
``RECEIPTQ_RECEIPT_QUEUE_PREFIX`` (default none, read when this module is imported):
the demo's workers run its receipts on queues of their own (``demo.ocr``, ...), so
they never take an app's jobs.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import psycopg

from receiptq import db, dead_letters
from receiptq.actors import broker
from receiptq.broker import PostgresBroker
from receiptq.config import validate_queue_name
from receiptq.middleware import add_app_middleware, receiptq_middleware
from receiptq.services import receipts

#: The environment variable of the queues' prefix.
QUEUE_PREFIX_VARIABLE = "RECEIPTQ_RECEIPT_QUEUE_PREFIX"
#: Each step's queue, without the prefix.
STEP_QUEUES = {"ocr_receipt": "ocr", "match_receipt": "matching", "send_email": "email"}


def queue_of(actor_name: str, prefix: str | None = None) -> str:
    """The queue of a step (``prefix`` None: this process's RECEIPTQ_RECEIPT_QUEUE_PREFIX)."""
    if prefix is None:
        prefix = os.environ.get(QUEUE_PREFIX_VARIABLE, "")
    return validate_queue_name(prefix + STEP_QUEUES[actor_name])


#: Queues of the three steps in this process.
OCR_QUEUE = queue_of("ocr_receipt")
MATCHING_QUEUE = queue_of("match_receipt")
EMAIL_QUEUE = queue_of("send_email")
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
def send_email(user_id: int, template: str, context: dict[str, Any]) -> None:
    """Render a template and email it to a user (once). Returns nothing: the last step
    has no pipeline to pass a value to (Dramatiq warns about a value nobody keeps)."""
    with broker.connection() as conn:
        receipts.send_email(conn, user_id, template, context)


RECEIPT_ACTORS = (ocr_receipt, match_receipt, send_email)


def receipt_broker(url: str, *, queue_prefix: str | None = None) -> PostgresBroker:
    """A broker on ``url`` with the receipt actors declared as the workers declare
    them (on queues with ``queue_prefix``, default this process's): for sending to
    another database than the one this process's workers use (the CLI's ``--url``,
    the demo, tests). Close it when done."""
    other = PostgresBroker(url, middleware=receiptq_middleware())
    add_app_middleware(other)
    for actor in RECEIPT_ACTORS:
        dramatiq.Actor(
            actor.fn,
            broker=other,
            actor_name=actor.actor_name,
            queue_name=queue_of(actor.actor_name, queue_prefix),
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
    first_step: str = "ocr_receipt",
) -> None:
    """Start a stored receipt's pipeline (inside ``broker.transaction(conn)`` to make
    it part of the caller's transaction), from ``first_step`` (``ocr_receipt`` or
    ``match_receipt``) on. ``job_options`` are added to every step's message options
    (e.g. ``max_backoff_ms``, which wins over the actors' own). The messages are those
    of ``broker``'s actors, on its queues."""
    options: dict[str, Any] = {**(job_options or {}), "user_id": str(user_id)}
    if tier is not None:
        options["tier"] = tier
    from_ocr = first_step == "ocr_receipt"
    ocr = broker.get_actor("ocr_receipt").message_with_options(args=(receipt_id,), **options)
    match = broker.get_actor("match_receipt").message_with_options(
        args=() if from_ocr else (receipt_id,), **options
    )
    email = broker.get_actor("send_email").message_with_options(
        args=(user_id, receipts.RECEIPT_TEMPLATE), **options
    )
    dramatiq.pipeline([ocr, match, email] if from_ocr else [match, email], broker=broker).run()


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


def retry_receipt(receipt_id: int, *, broker: PostgresBroker = broker) -> dict[str, Any]:
    """Run a stuck receipt again (see :func:`receiptq.services.receipts.list_receipts`):
    its dead-lettered job goes back to its queue (the rest of its pipeline follows), or,
    with no job left, its pipeline starts again at the step it waits for. What was done:
    ``{"receipt_id", "dead_letter_id", "actor"}`` (dead_letter_id None: started again).

    The receipt's row is locked meanwhile, so two retries at once start it once.

    Raises:
      UnknownReceipt: no such receipt.
      NotStuck: a job of it is queued or running, or it is finished (the message says).
    """
    with db.connect(broker.url) as conn, conn.transaction(), broker.transaction(conn):
        receipt = receipts.lock_stuck_receipt(conn, receipt_id)
        stuck = receipt["stuck"]
        if stuck["dead_letter_id"] is not None:
            dead_letters.retry(conn, ids=[stuck["dead_letter_id"]])
        else:
            user = receipts.get_user(conn, receipt["user_id"])
            first = "ocr_receipt" if receipt["status"] == "uploaded" else "match_receipt"
            process_receipt(
                receipt_id, user["id"], tier=user["tier"], broker=broker, first_step=first
            )
            stuck = {**stuck, "actor": first}
    return {"receipt_id": receipt_id, **stuck}
