"""The demo's generated world: users of mixed tiers, receipt images, bank
transactions, and the truth about each receipt; submitting the receipts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from receiptq.broker import PostgresBroker
from receiptq.processes import check_signals
from receiptq.services import receipts
from receiptq.tools.demo.database import DEMO_DOMAIN, MARK_OPTION

USERS = (("enterprise", 2), ("pro", 2), ("free", 3))
#: Shares of the generated receipts.
NO_TRANSACTION_SHARE = 0.15  # deliberately unmatched
NOISY_SHARE = 0.2  # skewed, blurred, speckled photos
BROKEN_SHARE = 0.05  # uploads that are not images: failed, dead-lettered
#: Transactions of other purchases per user, so matching has something to reject.
OTHER_TRANSACTIONS = 4
#: The demo's jobs back off for at most 2 s (the email actor's own ceiling is 5 min):
#: a run of injected failures must not stall a short demo.
MAX_BACKOFF_MS = 2_000


@dataclass
class Upload:
    """One receipt to submit, and what the pipeline should make of it."""

    user_id: int
    image: bytes
    expected: str  # "matched", "unmatched" or "failed"
    transaction_id: int | None = None
    receipt_id: int = 0


def create_users(conn: psycopg.Connection[Any]) -> list[int]:
    ids = []
    for tier, count in USERS:
        for n in range(1, count + 1):
            ids.append(receipts.add_user(conn, f"{tier}{n}@{DEMO_DOMAIN}", tier)["id"])
    return ids


def generate(conn: psycopg.Connection[Any], count: int, rng: random.Random) -> list[Upload]:
    """Users, receipt images and bank transactions; the truth about each receipt."""
    from receiptq.services import images  # Pillow and the fonts: the demo extra

    users = create_users(conn)
    today = date.today()
    uploads = []
    for n in range(count):
        user = users[n % len(users)]
        spec = images.random_receipt(rng, today=today)
        image = images.render_receipt(spec, noisy=rng.random() < NOISY_SHARE, seed=n)
        roll = rng.random()
        if roll < BROKEN_SHARE:
            uploads.append(Upload(user, image[: len(image) // 3], "failed"))
        elif roll < BROKEN_SHARE + NO_TRANSACTION_SHARE:
            uploads.append(Upload(user, image, "unmatched"))
        else:
            posted = spec.purchased_on + timedelta(days=rng.randint(0, 3))
            txn = receipts.add_transaction(
                conn, user, posted, spec.total, spec.currency, f"CARD {spec.bank_name}"
            )
            uploads.append(Upload(user, image, "matched", txn))
    for user in users:  # other purchases: amounts no receipt has
        for _ in range(OTHER_TRANSACTIONS):
            other = rng.choice(images.MERCHANTS)[1]
            amount = Decimal(rng.randint(5000, 9000)) / 100
            posted = today - timedelta(days=rng.randint(0, 30))
            receipts.add_transaction(conn, user, posted, amount, "EUR", f"CARD {other}")
    return uploads


def submit_all(
    broker: PostgresBroker, conn: psycopg.Connection[Any], uploads: list[Upload], run_id: str
) -> None:
    """Submit every receipt; each message carries the run's mark."""
    from receiptq.actors.receipts import submit_receipt

    options = {"max_backoff_ms": MAX_BACKOFF_MS, MARK_OPTION: run_id}
    for upload in uploads:
        upload.receipt_id = submit_receipt(
            upload.user_id, upload.image, conn, broker=broker, job_options=options
        )
        check_signals()
