"""The receipt pipeline: submit -> OCR -> matching -> email, on real worker processes,
plus transactional submission and the steps' idempotency."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from types import ModuleType

import psycopg
import pytest

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.middleware.backoff import PermanentError
from receiptq.services import images, receipts
from receiptq.services.smtp_sink import SmtpSink
from tests_support import start_dramatiq, stop, wait_until


@pytest.fixture
def receipt_actors(database_url) -> Iterator[tuple[ModuleType, PostgresBroker]]:
    """The receipt app's module and a broker that sends to the test's database."""
    from receiptq.actors import app as actors

    sender = actors.receipt_broker(database_url)
    yield actors, sender
    sender.close()


@pytest.fixture
def sink() -> Iterator[tuple[SmtpSink, int]]:
    mailbox = SmtpSink()
    port = mailbox.start()
    yield mailbox, port
    mailbox.stop()


def start_workers(url: str, smtp_port: int) -> subprocess.Popen:
    return start_dramatiq(
        "receiptq.actors",
        url,
        processes=1,
        threads=3,
        queues=("ocr", "matching", "email"),
        env={
            "RECEIPTQ_SMTP_HOST": "127.0.0.1",
            "RECEIPTQ_SMTP_PORT": str(smtp_port),
            "RECEIPTQ_POLL_INTERVAL_MS": "100",
        },
    )


def receipt_with_transaction(conn, user_id: int, seed: int, *, bank: bool = True):
    """A generated receipt image, and its bank transaction (posted a day later)."""
    spec = images.random_receipt(random.Random(seed), layout=images.LAYOUTS[seed % 3])
    txn_id = None
    if bank:
        txn_id = receipts.add_transaction(
            conn, user_id, spec.purchased_on + timedelta(days=1), spec.total,
            spec.currency, f"CARD {spec.bank_name}",
        )  # fmt: skip
    return spec, images.render_receipt(spec), txn_id


def jobs_in(conn) -> int:
    return conn.execute("SELECT count(*) AS n FROM receiptq.jobs").fetchone()["n"]


def test_receipts_flow_through_real_workers_to_notified_with_match_and_email(
    receipt_actors, sink, database_url, conn
):
    actors, sender = receipt_actors
    mailbox, smtp_port = sink
    ana = receipts.add_user(conn, "ana@example.test", "pro")
    bo = receipts.add_user(conn, "bo@example.test", "free")
    # A decoy of the same amount long before: the date window rules it out.
    first, first_image, first_txn = receipt_with_transaction(conn, ana["id"], 1)
    receipts.add_transaction(conn, ana["id"], first.purchased_on - timedelta(days=20),
                             first.total, first.currency, f"CARD {first.bank_name}")  # fmt: skip
    _, second_image, second_txn = receipt_with_transaction(conn, bo["id"], 2)
    _, lonely_image, _ = receipt_with_transaction(conn, bo["id"], 3, bank=False)

    ids = {
        "first": actors.submit_receipt(ana["id"], first_image, broker=sender),
        "second": actors.submit_receipt("bo@example.test", second_image, broker=sender),
        "lonely": actors.submit_receipt(bo["id"], lonely_image, broker=sender),
        "junk": actors.submit_receipt(ana["id"], b"%PDF-1.4 not a picture", broker=sender),
    }
    tiers = conn.execute("SELECT DISTINCT tier FROM receiptq.jobs ORDER BY 1").fetchall()
    assert [t["tier"] for t in tiers] == ["free", "pro"]

    workers = start_workers(database_url, smtp_port)
    try:

        def settled() -> bool:
            statuses = {r["id"]: r["status"] for r in receipts.list_receipts(conn)}
            return all(statuses[i] in ("notified", "failed") for i in ids.values())

        wait_until(settled, 90, "every receipt to be notified or failed")
        wait_until(lambda: jobs_in(conn) == 0, 30, "the jobs to finish")
    finally:
        stop(workers)

    got = {name: receipts.get_receipt(conn, rid) for name, rid in ids.items()}
    assert got["first"]["status"] == "notified"
    assert got["first"]["transaction_id"] == first_txn
    assert got["first"]["total"] == first.total
    assert got["first"]["purchased_on"] == first.purchased_on
    assert got["second"]["status"] == "notified"
    assert got["second"]["transaction_id"] == second_txn
    assert got["lonely"]["status"] == "notified"
    assert got["lonely"]["transaction_id"] is None
    assert "no bank transaction" in got["lonely"]["reason"]
    assert got["junk"]["status"] == "failed"
    assert "not a readable image" in got["junk"]["reason"]

    arrived = sorted((m[1][0], m[2]["Subject"]) for m in mailbox.messages)
    assert len(arrived) == 3
    assert [to for to, _ in arrived] == ["ana@example.test", "bo@example.test", "bo@example.test"]
    assert any(f"#{ids['lonely']}" in s and "unmatched" in s for _, s in arrived)
    assert db.fetch_one(conn, "email_count")["emails"] == 3

    # The unreadable upload failed once and was dead-lettered, not retried.
    [letter] = db.fetch_all(conn, "dead_letter_list", {"actor": None, "queue": None, "limit": 10})
    assert letter["actor"] == "ocr_receipt"
    assert letter["attempts"] == 1
    assert "not a readable image" in letter["error"]


def test_a_rolled_back_submit_leaves_neither_receipt_nor_job(receipt_actors, database_url, conn):
    actors, sender = receipt_actors
    user = receipts.add_user(conn, "cy@example.test", "free")
    image = images.render_receipt(images.random_receipt(random.Random(4)))

    class Rollback(Exception):
        pass

    with psycopg.connect(database_url) as app_conn:
        with pytest.raises(Rollback), app_conn.transaction():
            receipt_id = actors.submit_receipt(user["id"], image, app_conn, broker=sender)
            assert receipt_id > 0
            raise Rollback
    assert receipts.list_receipts(conn) == []
    assert jobs_in(conn) == 0

    # Committed, the same call leaves one receipt and its first job.
    receipt_id = actors.submit_receipt(user["id"], image, broker=sender)
    assert receipts.get_receipt(conn, receipt_id)["status"] == "uploaded"
    assert jobs_in(conn) == 1


def test_submitting_for_an_unknown_user_or_an_empty_image_stores_nothing(receipt_actors, conn):
    actors, sender = receipt_actors
    user = receipts.add_user(conn, "dee@example.test", "free")
    with pytest.raises(receipts.UnknownUser, match="nobody@example.test"):
        actors.submit_receipt("nobody@example.test", b"image", broker=sender)
    with pytest.raises(receipts.UnknownUser):
        actors.submit_receipt(user["id"] + 99, b"image", broker=sender)
    with pytest.raises(ValueError, match="empty"):
        actors.submit_receipt(user["id"], b"", broker=sender)
    assert receipts.list_receipts(conn) == []
    assert jobs_in(conn) == 0


class CountingOcr:
    """Stands in for the OCR engine to count calls (the database is real)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.calls = 0

    def read_text(self, image: bytes) -> str:
        self.calls += 1
        return self.text


def test_each_step_run_twice_does_its_work_once(broker, conn, sink, monkeypatch):
    mailbox, port = sink
    monkeypatch.setenv("RECEIPTQ_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("RECEIPTQ_SMTP_PORT", str(port))
    user = receipts.add_user(conn, "eve@example.test", "free")
    txn = receipts.add_transaction(conn, user["id"], date(2026, 3, 15), Decimal("9.84"), "EUR",
                                   "CARD GREEN GROCER MARKET")  # fmt: skip
    receipt_id = receipts.store_receipt(conn, user["id"], images.render_receipt(
        images.random_receipt(random.Random(6))))  # fmt: skip
    engine = CountingOcr("GREEN GROCER MARKET\nDate: 2026-03-14\nTOTAL EUR 9.84")

    assert receipts.read_receipt(conn, receipt_id, engine) == "read"
    assert receipts.read_receipt(conn, receipt_id, engine) == "read"
    assert engine.calls == 1
    context = receipts.match_receipt(conn, receipt_id)
    assert receipts.match_receipt(conn, receipt_id) == context
    assert context["outcome"] == "matched"
    assert receipts.get_receipt(conn, receipt_id)["transaction_id"] == txn
    assert receipts.send_email(conn, user["id"], "receipt_processed", context) is True
    assert receipts.send_email(conn, user["id"], "receipt_processed", context) is False
    assert mailbox.count == 1
    assert receipts.get_receipt(conn, receipt_id)["status"] == "notified"
    # A redelivered OCR job after notification changes nothing.
    assert receipts.read_receipt(conn, receipt_id, engine) == "notified"
    assert engine.calls == 1


def test_an_unreadable_image_marks_the_receipt_failed_with_the_reason(broker, conn):
    user = receipts.add_user(conn, "fay@example.test", "free")
    receipt_id = receipts.store_receipt(conn, user["id"], b"GIF89a broken")
    with pytest.raises(PermanentError, match="not a readable image|damaged"):
        receipts.read_receipt(conn, receipt_id, CountingOcr("unused"))
    failed = receipts.get_receipt(conn, receipt_id)
    assert failed["status"] == "failed"
    assert failed["reason"]
    with pytest.raises(PermanentError, match="failed: nothing to match"):
        receipts.match_receipt(conn, receipt_id)


def test_images_can_live_in_a_directory_instead_of_the_row(broker, conn, tmp_path, monkeypatch):
    monkeypatch.setenv("RECEIPTQ_IMAGE_DIR", str(tmp_path / "images"))
    user = receipts.add_user(conn, "gus@example.test", "free")
    receipt_id = receipts.store_receipt(conn, user["id"], b"not an image either")
    [path] = (tmp_path / "images").iterdir()
    assert path.read_bytes() == b"not an image either"
    path.unlink()
    with pytest.raises(PermanentError, match="is gone"):
        receipts.read_receipt(conn, receipt_id, CountingOcr("unused"))
    assert receipts.get_receipt(conn, receipt_id)["status"] == "failed"
