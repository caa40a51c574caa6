"""Stuck receipts: unfinished, with no job of their pipeline queued or running.

`receiptq receipts list` flags them, `--stuck` lists only them, `--json` carries
``stuck``, the status counts count them apart; `receiptq dead-letter retry`
un-sticks one, a purge does not.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from types import ModuleType

import dramatiq
import pytest

from receiptq import cli
from receiptq.broker import PostgresBroker
from receiptq.services import images, receipts
from receiptq.services.faults import FAIL_RATE_VARIABLE
from receiptq.tools.demo import view as demo
from tests_support import start_dramatiq, stop, wait_until


@pytest.fixture
def url(database_url, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "250")  # rich tables on one line per row
    return database_url


@pytest.fixture
def sender(url) -> Iterator[tuple[ModuleType, PostgresBroker]]:
    from receiptq.actors import app as actors

    broker = actors.receipt_broker(url)
    # In-process service calls (read_receipt's OCR breaker) use the global broker:
    # receiptq.actors' own may point at an earlier test's database.
    dramatiq.set_broker(broker)
    yield actors, broker
    broker.close()


class FixedOcr:
    def read_text(self, image: bytes) -> str:
        return "CORNER CAFE\nDate: 2026-03-14\nTOTAL EUR 9.84"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def listed(capsys, url: str, *options: str) -> dict[int, dict | None]:
    code, out, _ = run(capsys, "receipts", "list", *options, "--json", "--url", url)
    assert code == 0
    return {row["id"]: row["stuck"] for row in json.loads(out)["receipts"]}


def shown(capsys, url: str, receipt_id: int) -> dict:
    code, out, _ = run(capsys, "receipts", "show", str(receipt_id), "--json", "--url", url)
    assert code == 0
    return json.loads(out)


@pytest.mark.timeout(120)
def test_dead_lettered_and_jobless_receipts_are_stuck_until_retried(url, conn, sender, capsys):
    actors, broker = sender
    user = receipts.add_user(conn, "ana@example.test")
    image = images.render_receipt(images.random_receipt(random.Random(3)))
    once = {"max_retries": 0}  # the first failure is the last: a dead letter at once
    ocr_dead = actors.submit_receipt(user["id"], image, broker=broker, job_options=once)
    purged = actors.submit_receipt(user["id"], image, broker=broker, job_options=once)
    junk = actors.submit_receipt(user["id"], b"not an image", broker=broker, job_options=once)
    # Read and matched in process; its email job is sent by hand and dies in the worker.
    unmatched = receipts.store_receipt(conn, user["id"], image)
    receipts.read_receipt(conn, unmatched, FixedOcr())
    context = receipts.match_receipt(conn, unmatched)
    broker.get_actor("send_email").send_with_options(
        args=(user["id"], receipts.RECEIPT_TEMPLATE, context), **once
    )

    # Real workers whose OCR and SMTP services always fail: the broker's own
    # dead-letter path (retries exhausted; the junk upload: a permanent error).
    workers = start_dramatiq(
        "receiptq.actors",
        url,
        processes=1,
        threads=2,
        queues=("ocr", "matching", "email"),
        env={FAIL_RATE_VARIABLE: "1", "RECEIPTQ_POLL_INTERVAL_MS": "100"},
    )
    try:
        wait_until(
            lambda: (
                conn.execute("SELECT count(*) AS n FROM receiptq.dead_letters").fetchone()["n"] == 4
            ),
            60,
            "four dead letters",
        )
    finally:
        stop(workers)
    letters = conn.execute(
        "SELECT id, actor, reason, message FROM receiptq.dead_letters"
    ).fetchall()
    ocr = {int(d["message"]["args"][0]): d for d in letters if d["actor"] == "ocr_receipt"}
    assert sorted(ocr) == sorted([ocr_dead, purged, junk])
    assert ocr[ocr_dead]["reason"] == ocr[purged]["reason"] == "retries exhausted"
    assert ocr[junk]["reason"] == "permanent error"
    [email_dead] = [d["id"] for d in letters if d["actor"] == "send_email"]

    # Not stuck: in flight (its job is queued), or finished (failed, although its OCR
    # job is a dead letter too).
    in_flight = actors.submit_receipt(user["id"], image, broker=broker)
    # Stuck with no job at all: one whose pipeline never started, and one read by
    # hand whose matching job was never queued.
    never_queued = receipts.store_receipt(conn, user["id"], image)
    read = receipts.store_receipt(conn, user["id"], image)
    receipts.read_receipt(conn, read, FixedOcr())
    assert receipts.get_receipt(conn, junk)["status"] == "failed"

    stuck = listed(capsys, url)
    assert stuck[in_flight] is None and stuck[junk] is None
    assert stuck[ocr_dead]["dead_letter_id"] == ocr[ocr_dead]["id"]
    assert stuck[ocr_dead]["actor"] == "ocr_receipt"
    assert stuck[ocr_dead]["error"].startswith("ServiceUnavailable: ocr: injected failure")
    assert (stuck[unmatched]["dead_letter_id"], stuck[unmatched]["actor"]) == (
        email_dead,
        "send_email",
    )
    assert stuck[unmatched]["error"].startswith("ServiceUnavailable: email: injected failure")
    assert stuck[never_queued] == {"dead_letter_id": None, "actor": "ocr_receipt", "error": None}
    assert stuck[read] == {"dead_letter_id": None, "actor": "match_receipt", "error": None}

    assert sorted(listed(capsys, url, "--stuck")) == sorted(
        [ocr_dead, purged, unmatched, never_queued, read]
    )
    assert list(listed(capsys, url, "--stuck", "--status", "unmatched")) == [unmatched]
    assert list(listed(capsys, url, "--stuck", "--limit", "1")) == [read]  # newest first

    code, out, _ = run(capsys, "receipts", "list", "--url", url)
    assert code == 0
    assert f"uploaded (stuck: dead letter {ocr[ocr_dead]['id']})" in out
    assert f"unmatched (stuck: dead letter {email_dead})" in out
    assert "read (stuck: no job)" in out
    assert "`receiptq dead-letter retry N`" in out
    code, out, _ = run(capsys, "receipts", "list", "--stuck", "--url", url)
    assert code == 0 and "stuck receipts (5)" in out

    assert shown(capsys, url, unmatched)["where"].startswith(
        f"stuck: its send_email job is dead letter {email_dead} (ServiceUnavailable: email:"
    )
    assert shown(capsys, url, in_flight)["where"] == "uploaded, waiting for OCR"
    assert shown(capsys, url, in_flight)["stuck"] is None
    # A job of its pipeline queued anew (not a retry): in flight, although its dead
    # letter is still there.
    broker.get_actor("send_email").send_with_options(
        args=(user["id"], receipts.RECEIPT_TEMPLATE, context)
    )
    assert listed(capsys, url)[unmatched] is None

    counts = receipts.status_counts(conn)
    assert counts == {"uploaded": 1, "read": 0, "matched": 0, "unmatched": 1,
                      "notified": 0, "failed": 1, "stuck": 4}  # fmt: skip
    assert demo.status_table({"queues": {}}, {}, counts).title == (
        "receipts: 1 uploaded, 0 read, 0 matched, 1 unmatched, 0 notified, 1 failed, 4 stuck"
    )

    # Retried: its job is back in the queue, in flight again, not stuck.
    code, _, _ = run(capsys, "dead-letter", "retry", str(ocr[ocr_dead]["id"]), "--url", url)
    assert code == 0
    stuck = listed(capsys, url)
    assert stuck[ocr_dead] is None
    assert shown(capsys, url, ocr_dead)["where"] == "uploaded, waiting for OCR"
    assert ocr_dead not in listed(capsys, url, "--stuck")
    assert receipts.status_counts(conn)["uploaded"] == 2
    assert receipts.status_counts(conn)["stuck"] == 3

    # Purged: nothing will ever process it, so it stays stuck, now with no job at all.
    code, _, _ = run(capsys, "dead-letter", "purge", str(ocr[purged]["id"]), "--url", url)
    assert code == 0
    assert listed(capsys, url, "--stuck")[purged] == {
        "dead_letter_id": None,
        "actor": "ocr_receipt",
        "error": None,
    }
    assert shown(capsys, url, purged)["where"] == (
        "stuck: no ocr_receipt job of it is queued, running or dead-lettered (its dead letter"
        " was purged, or it was never queued), so nothing will process it;"
        f" `receiptq receipts retry {purged}` starts it again"
    )
    assert receipts.status_counts(conn)["stuck"] == 3


def test_where_a_stuck_receipt_is_reads_as_a_sentence():
    from receiptq.cli.receipts import where

    dead = {"dead_letter_id": 7, "actor": "match_receipt", "error": "OSError: gone"}
    assert where({"status": "read", "stuck": dead}) == (
        "stuck: its match_receipt job is dead letter 7 (OSError: gone); "
        "`receiptq dead-letter retry 7` runs it again"
    )
    gone = {"dead_letter_id": None, "actor": "send_email", "error": None}
    assert where({"id": 5, "status": "matched", "stuck": gone}).startswith(
        "stuck: no send_email job of it is queued, running or dead-lettered"
    )
