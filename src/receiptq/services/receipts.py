"""The receipt application's steps on its own tables (schema ``receiptq_app``, created by
:func:`migrate`: the receipt app's own migration chain, not ``receiptq db migrate``).

Each step is idempotent, because a job may be delivered more than once: it
looks at the receipt's status first and does nothing a previous delivery did
already (``read_receipt`` skips a receipt past ``uploaded``, ``match_receipt``
returns the recorded outcome, ``send_email`` skips a dedupe key already sent).

Images are stored in the receipt row, or, when ``RECEIPTQ_IMAGE_DIR`` is set,
as files in that directory named by their SHA-256 (the row keeps the path).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from receiptq import db
from receiptq.middleware.backoff import PermanentError
from receiptq.services import email as mail
from receiptq.services.matching import (
    DEFAULT_RULES,
    MatchRules,
    ReceiptFacts,
    Transaction,
    best_match,
)
from receiptq.services.ocr import OcrEngine, read_receipt_text
from receiptq.services.parsing import parse_receipt
from receiptq.settings import Settings

#: A receipt's statuses, in pipeline order (see receipts_migrations/0001_receipts_schema).
STATUSES = ("uploaded", "read", "matched", "unmatched", "notified", "failed")
#: The unfinished statuses, and the actor whose job moves a receipt on from each.
NEXT_ACTOR = {
    "uploaded": "ocr_receipt",
    "read": "match_receipt",
    "matched": "send_email",
    "unmatched": "send_email",
}
#: The template of the email that ends a receipt's pipeline.
RECEIPT_TEMPLATE = "receipt_processed"
#: Largest image accepted at submission (bytes).
MAX_IMAGE_BYTES = 20 * 1024 * 1024


class UnknownUser(LookupError):
    """No user has this id or email."""


class UnknownReceipt(LookupError):
    """No receipt has this id."""


class NotStuck(Exception):
    """A receipt asked to run again is not stuck (the message says why)."""


def migrate(url: str) -> dict[str, list[str]]:
    """Apply the queue's migrations, then the receipt app's (whose queries join the
    queue's tables); the names applied now, per chain."""
    return {
        "queue": db.migrate(url, db.QUEUE_CHAIN),
        "receipts": db.migrate(url, db.RECEIPTS_CHAIN),
    }


def tables_of_0_1(url: str) -> bool:
    """Whether the receipt app's tables are still where receiptq 0.1 put them (schema
    app, created by its queue migration 0005): `receiptq receipts migrate` moves them."""
    in_0_1 = "0005_receipts_app" in db.applied_migrations(url)
    return in_0_1 and not db.applied_migrations(url, db.RECEIPTS_CHAIN)


# --- users and uploads -------------------------------------------------------------------


def add_user(conn: psycopg.Connection[Any], email: str, tier: str = "free") -> dict[str, Any]:
    """Add a user (or change the tier of the user with this email)."""
    if "@" not in email.strip("@"):
        raise ValueError(f"not an email address: {email!r}")
    row = db.fetch_one(conn, "user_upsert", {"email": email, "tier": tier})
    assert row is not None
    return row


def get_user(conn: psycopg.Connection[Any], user: int | str) -> dict[str, Any]:
    """A user by id or email; UnknownUser if there is none."""
    if isinstance(user, int) or (isinstance(user, str) and user.isdigit()):
        row = db.fetch_one(conn, "user_get", {"id": int(user)})
    else:
        row = db.fetch_one(conn, "user_get_by_email", {"email": user})
    if row is None:
        raise UnknownUser(f"no user {user!r}")
    return row


def image_dir(settings: Settings | None = None) -> Path | None:
    """``settings.image_dir`` (default: the environment's ``RECEIPTQ_IMAGE_DIR``)."""
    return (settings or Settings.from_env()).image_dir


def store_receipt(conn: psycopg.Connection[Any], user_id: int, image: bytes) -> int:
    """Insert an uploaded receipt (image in the row or in RECEIPTQ_IMAGE_DIR); its id."""
    if not image:
        raise ValueError("the receipt image is empty")
    if len(image) > MAX_IMAGE_BYTES:
        raise ValueError(f"the receipt image is larger than {MAX_IMAGE_BYTES} bytes")
    folder = image_dir()
    params: dict[str, Any] = {"user_id": user_id, "image": image, "image_path": None}
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{hashlib.sha256(image).hexdigest()}.img"
        if not path.exists():
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_bytes(image)
            temporary.replace(path)
        params.update(image=None, image_path=str(path))
    row = db.fetch_one(conn, "receipt_insert", params)
    assert row is not None
    return int(row["id"])


def add_transaction(
    conn: psycopg.Connection[Any],
    user_id: int,
    posted_on: date,
    amount: Decimal,
    currency: str,
    description: str,
) -> int:
    params = {
        "user_id": user_id,
        "posted_on": posted_on,
        "amount": amount,
        "currency": currency,
        "description": description,
    }
    row = db.fetch_one(conn, "transaction_insert", params)
    assert row is not None
    return int(row["id"])


def get_receipt(conn: psycopg.Connection[Any], receipt_id: int) -> dict[str, Any]:
    row = db.fetch_one(conn, "receipt_get", {"id": receipt_id})
    if row is None:
        raise UnknownReceipt(f"no receipt {receipt_id}")
    return row


def list_receipts(
    conn: psycopg.Connection[Any],
    *,
    status: str | None = None,
    stuck: bool = False,
    receipt_id: int | None = None,
    ids: list[int] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Receipts, newest first: all, or one, those with ``ids``, those in ``status``,
    and/or only the stuck ones. One query, however many receipts.

    Each has ``stuck``: None, or ``{"dead_letter_id", "actor", "error"}`` when the
    receipt is unfinished and no job of its pipeline is queued or running, so nothing
    will move it on. Either a job of it is a dead letter (its id, actor and
    ``"ErrorType: message"``; ``receiptq dead-letter retry`` runs it again), or there is
    no job of it at all (dead_letter_id and error None, actor the step it waits for):
    its dead letter was purged, or its pipeline was never started. The database keeps
    no trace of a purge, so the two cannot be told apart.
    """
    params = {"status": status, "stuck": stuck, "id": receipt_id, "ids": ids, "limit": limit}
    rows = db.fetch_all(conn, "receipt_list", params)
    for row in rows:
        dead = {
            "dead_letter_id": row.pop("dead_letter_id"),
            "actor": row.pop("dead_letter_actor"),
            "error": row.pop("dead_letter_error"),
        }
        if dead["dead_letter_id"] is None:
            dead["actor"] = NEXT_ACTOR.get(row["status"])
        row["stuck"] = dead if row["stuck"] else None
    return rows


def stuck_of(conn: psycopg.Connection[Any], receipt_id: int) -> dict[str, Any] | None:
    """Why nothing will move a receipt on (see :func:`list_receipts`), or None."""
    rows = list_receipts(conn, receipt_id=receipt_id)
    return rows[0]["stuck"] if rows else None


def lock_stuck_receipt(conn: psycopg.Connection[Any], receipt_id: int) -> dict[str, Any]:
    """Lock a receipt's row until the transaction ends and return it with its ``stuck``;
    :class:`NotStuck` (saying why) when something will still move it on or it is
    finished, :class:`UnknownReceipt` when there is none."""
    if db.fetch_one(conn, "receipt_lock", {"id": receipt_id}) is None:
        raise UnknownReceipt(f"no receipt {receipt_id}")
    (receipt,) = list_receipts(conn, receipt_id=receipt_id)
    if receipt["stuck"] is not None:
        return receipt
    if receipt["status"] == "notified":
        why = "it is notified: its pipeline is finished"
    elif receipt["status"] == "failed":
        why = f"it failed for good ({receipt['reason']}): running it again cannot help"
    else:
        why = f"it is {receipt['status']} and a job of its pipeline is queued or running"
    raise NotStuck(f"receipt {receipt_id} is not stuck: {why}")


def status_counts(conn: psycopg.Connection[Any], ids: list[int] | None = None) -> dict[str, int]:
    """How many receipts (all, or those with ``ids``) are in each status, and ``stuck``:
    a stuck receipt counts as stuck, not in its status, so the counts add up to the
    receipts."""
    counts = dict.fromkeys((*STATUSES, "stuck"), 0)
    with conn.transaction():
        # Stuck ones first: a receipt stuck now is still in its status a moment later.
        stuck = list_receipts(conn, stuck=True, ids=ids)
        rows = db.fetch_all(conn, "receipt_status_counts", {"ids": ids})
    for row in rows:
        counts[row["status"]] = int(row["receipts"])
    for row in stuck:
        counts[row["status"]] -= 1
        counts["stuck"] += 1
    return counts


# --- the pipeline's steps ----------------------------------------------------------------


def _image_bytes(row: dict[str, Any]) -> bytes:
    if row["image"] is not None:
        return bytes(row["image"])
    try:
        return Path(row["image_path"]).read_bytes()
    except FileNotFoundError:
        raise PermanentError(f"the receipt image file {row['image_path']} is gone") from None


def _existing(conn: psycopg.Connection[Any], name: str, receipt_id: int) -> dict[str, Any]:
    row = db.fetch_one(conn, name, {"id": receipt_id})
    if row is None:
        raise PermanentError(f"no receipt {receipt_id}")
    return row


def read_receipt(
    conn: psycopg.Connection[Any], receipt_id: int, engine: OcrEngine | None = None
) -> str:
    """OCR an uploaded receipt and store its fields; the receipt's status after.

    A receipt that cannot be read (not an image) is marked failed with the reason,
    and the PermanentError goes on (so the job is dead-lettered, not retried).
    """
    row = _existing(conn, "receipt_image", receipt_id)
    if row["status"] != "uploaded":
        return str(row["status"])  # a previous delivery did it
    try:
        text = read_receipt_text(_image_bytes(row), engine)
    except PermanentError as exc:
        db.execute(conn, "receipt_set_failed", {"id": receipt_id, "reason": str(exc)})
        raise
    fields = parse_receipt(text)
    params = {
        "id": receipt_id,
        "merchant": fields.merchant,
        "purchased_on": fields.purchased_on,
        "total": fields.total,
        "currency": fields.currency,
        "raw_text": text,
    }
    db.execute(conn, "receipt_set_read", params)
    return "read"


def match_receipt(
    conn: psycopg.Connection[Any], receipt_id: int, rules: MatchRules = DEFAULT_RULES
) -> dict[str, Any]:
    """Match a read receipt to its owner's transactions (once); the email context."""
    receipt = get_receipt(conn, receipt_id)
    if receipt["status"] == "read":
        facts = ReceiptFacts(
            receipt["merchant"], receipt["purchased_on"], receipt["total"], receipt["currency"]
        )
        rows = db.fetch_all(
            conn,
            "transaction_candidates",
            {"user_id": receipt["user_id"], "receipt_id": receipt_id},
        )
        result = best_match(facts, [Transaction(**row) for row in rows], rules)
        # The match and the status change commit together; a transaction another
        # receipt claimed meanwhile raises UniqueViolation: the job retries.
        with conn.transaction():
            if result.matched:
                db.execute(conn, "match_insert", {"receipt_id": receipt_id,
                           "transaction_id": result.transaction_id, "score": result.score})  # fmt: skip
            db.execute(conn, "receipt_set_outcome", {"id": receipt_id,
                       "status": "matched" if result.matched else "unmatched",
                       "reason": result.reason})  # fmt: skip
        receipt = get_receipt(conn, receipt_id)
    if receipt["status"] not in ("matched", "unmatched", "notified"):
        raise PermanentError(f"receipt {receipt_id} is {receipt['status']}: nothing to match")
    return email_context(receipt)


def email_context(receipt: dict[str, Any]) -> dict[str, Any]:
    """The receipt_processed email's context (JSON-ready: it travels in a message)."""
    matched = receipt["transaction_id"] is not None
    if matched:
        detail = (
            f"bank transaction {receipt['transaction_description']} of "
            f"{receipt['transaction_posted_on']}, score {receipt['score']:.2f}"
        )
    else:
        detail = receipt["reason"] or "no matching bank transaction"
    return {
        "receipt_id": receipt["id"],
        "merchant": receipt["merchant"] or "unknown merchant",
        "purchased_on": str(receipt["purchased_on"] or "unknown date"),
        "total": str(receipt["total"] or "?"),
        "currency": receipt["currency"] or "",
        "outcome": "matched" if matched else "unmatched",
        "detail": detail,
    }


def dedupe_key(user_id: int, template: str, context: dict[str, Any]) -> str:
    """The same email to the same user is one email, however often the job runs."""
    payload = json.dumps([user_id, template, context], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def send_email(
    conn: psycopg.Connection[Any], user_id: int, template: str, context: dict[str, Any]
) -> bool:
    """Email a user (once per dedupe key); True when it was sent now.

    A receipt_processed email also moves its receipt to notified.
    """
    try:
        user = db.fetch_one(conn, "user_get", {"id": int(user_id)})
    except (TypeError, ValueError):
        raise PermanentError(f"not a user id: {user_id!r}") from None
    if user is None:
        raise PermanentError(f"no user {user_id}: cannot email")
    user_id = int(user["id"])
    key = dedupe_key(user_id, template, context)
    sent_now = False
    if db.fetch_one(conn, "email_sent", {"dedupe_key": key}) is None:
        rendered = mail.render(template, context)
        mail.send(user["email"], rendered)
        db.execute(conn, "email_record", {"user_id": user_id, "template": template,
                   "dedupe_key": key, "recipient": user["email"], "subject": rendered.subject})  # fmt: skip
        sent_now = True
    if template == RECEIPT_TEMPLATE and "receipt_id" in context:
        db.execute(conn, "receipt_set_notified", {"id": int(context["receipt_id"])})
    return sent_now
