"""The receipt pipeline's actors: OCR -> matching -> email (logic in receiptq.services).

The app calls one function, :func:`submit_receipt` (store the image and the row,
and start the pipeline, in one transaction), or :func:`process_receipt` for a
receipt it stored itself; :func:`retry_receipt` runs a stuck receipt again. The
pipeline passes each step's result on: ``ocr_receipt`` returns the receipt id to
``match_receipt``, which returns the email's context to ``send_email``. Every actor is idempotent (delivery is
at-least-once). OCR and email go through their services' circuit breakers: while
one is open, those jobs are postponed without using an attempt.

The steps are declared on a broker by :func:`declare` (the receipt app's broker,
:mod:`receiptq.actors.app`, does it on first use), on the queues ``ocr``,
``matching`` and ``email``, each with the prefix ``receipt_queue_prefix``
(``RECEIPTQ_RECEIPT_QUEUE_PREFIX``, default none): the demo's workers run its
receipts on queues of their own (``demo.ocr``, ...), so they never take an app's
jobs. ``ocr_receipt``, ``match_receipt`` and ``send_email`` here are the actors of
the process's broker (``dramatiq.get_broker()``).
"""

from __future__ import annotations

from typing import Any

import dramatiq
import psycopg

from receiptq import db, dead_letters
from receiptq.broker import PostgresBroker
from receiptq.config import validate_queue_name
from receiptq.services import receipts
from receiptq.settings import Settings

#: Each step's queue, without the prefix.
STEP_QUEUES = {"ocr_receipt": "ocr", "match_receipt": "matching", "send_email": "email"}


def queue_of(actor_name: str, prefix: str | None = None) -> str:
    """The queue of a step (``prefix`` None: the environment's RECEIPTQ_RECEIPT_QUEUE_PREFIX)."""
    if prefix is None:
        prefix = Settings.from_env().receipt_queue_prefix
    return validate_queue_name(prefix + STEP_QUEUES[actor_name])


def _broker() -> PostgresBroker:
    """The broker running the step: the process's."""
    broker = dramatiq.get_broker()
    if not isinstance(broker, PostgresBroker):
        raise RuntimeError("the receipt pipeline's actors need a PostgresBroker")
    return broker


def read_receipt_step(receipt_id: int) -> int:
    """Read an uploaded receipt's merchant, date, total and currency; the receipt id."""
    with _broker().connection() as conn:
        receipts.read_receipt(conn, receipt_id)
    return receipt_id


def match_receipt_step(receipt_id: int) -> dict[str, Any]:
    """Match a read receipt to a bank transaction; the context of the email to send."""
    with _broker().connection() as conn:
        return receipts.match_receipt(conn, receipt_id)


def send_email_step(user_id: int, template: str, context: dict[str, Any]) -> None:
    """Render a template and email it to a user (once). Returns nothing: the last step
    has no pipeline to pass a value to (Dramatiq warns about a value nobody keeps)."""
    with _broker().connection() as conn:
        receipts.send_email(conn, user_id, template, context)


#: The steps: actor name -> (function, actor options).
STEPS: dict[str, tuple[Any, dict[str, Any]]] = {
    "ocr_receipt": (
        read_receipt_step,
        {"breakers": ("ocr",), "max_retries": 5, "min_backoff_ms": 500, "max_backoff_ms": 60_000},
    ),
    "match_receipt": (
        match_receipt_step,
        {"max_retries": 5, "min_backoff_ms": 200, "max_backoff_ms": 30_000},
    ),
    "send_email": (
        send_email_step,
        {
            "breakers": ("email",),
            "max_retries": 8,
            "min_backoff_ms": 500,
            "max_backoff_ms": 300_000,
        },
    ),
}


def ocr_prefetch(settings: Settings) -> int | None:
    """OCR jobs one worker process holds at most (claimed and not finished). Local
    RapidOCR already uses the process's share of the cores for one image: a second
    job would only wait in that process while another process sits idle. A hosted
    OCR service (``ocr_url``) waits on the network: Dramatiq's prefetch then.
    ``receiptq queue prefetch ocr N`` overrides this for every worker."""
    return None if settings.ocr_url else 1


def declare(broker: PostgresBroker, settings: Settings) -> None:
    """Declare the three steps on ``broker``, on the queues of ``settings``."""
    for name, (fn, options) in STEPS.items():
        extra = {"prefetch": ocr_prefetch(settings)} if name == "ocr_receipt" else {}
        dramatiq.Actor(
            fn,
            broker=broker,
            actor_name=name,
            queue_name=queue_of(name, settings.receipt_queue_prefix),
            priority=0,
            options={**options, **extra},
        )


def __getattr__(name: str) -> Any:
    """``ocr_receipt``, ``match_receipt``, ``send_email``: the process broker's actors."""
    if name in STEPS:
        return dramatiq.get_broker().get_actor(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def process_receipt(
    receipt_id: int,
    user_id: int,
    *,
    tier: str | None = None,
    broker: PostgresBroker | None = None,
    job_options: dict[str, Any] | None = None,
    first_step: str = "ocr_receipt",
) -> None:
    """Start a stored receipt's pipeline (inside ``broker.transaction(conn)`` to make
    it part of the caller's transaction), from ``first_step`` (``ocr_receipt`` or
    ``match_receipt``) on. ``job_options`` are added to every step's message options
    (e.g. ``max_backoff_ms``, which wins over the actors' own). The messages are those
    of ``broker``'s actors (default: the process's broker), on its queues."""
    broker = broker or _broker()
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
    broker: PostgresBroker | None = None,
    job_options: dict[str, Any] | None = None,
) -> int:
    """Store a receipt image for a user and start its pipeline, atomically; its id.

    With ``conn``, everything happens in that connection's transaction (a savepoint
    if one is open): if the caller rolls back, neither the receipt nor its jobs exist.

    ``user_id`` may also be the user's email. ``broker`` defaults to the process's
    (the receipt app's, once :mod:`receiptq.actors` is imported).

    Raises:
      UnknownUser: no such user (nothing is stored).
      ValueError: the image is empty or too large (nothing is stored).
    """
    broker = broker or _broker()
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


def retry_receipt(receipt_id: int, *, broker: PostgresBroker | None = None) -> dict[str, Any]:
    """Run a stuck receipt again (see :func:`receiptq.services.receipts.list_receipts`):
    its dead-lettered job goes back to its queue (the rest of its pipeline follows), or,
    with no job left, its pipeline starts again at the step it waits for. What was done:
    ``{"receipt_id", "dead_letter_id", "actor"}`` (dead_letter_id None: started again).

    The receipt's row is locked meanwhile, so two retries at once start it once.

    Raises:
      UnknownReceipt: no such receipt.
      NotStuck: a job of it is queued or running, or it is finished (the message says).
    """
    broker = broker or _broker()
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
