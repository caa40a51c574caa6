"""`receiptq receipts retry ID`: a stuck receipt (its job dead-lettered, or none left)
runs again, on real worker processes, to the end of its pipeline; a receipt that is
not stuck is refused with the reason."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import dramatiq
import pytest

from receiptq import cli
from receiptq.broker import PostgresBroker
from receiptq.services import images, receipts
from receiptq.services.smtp_sink import SmtpSink, free_port
from tests_support import start_dramatiq, stop, wait_until


class FixedOcr:
    def read_text(self, image: bytes) -> str:
        return "CORNER CAFE\nDate: 2026-03-14\nTOTAL EUR 9.84"


@pytest.fixture
def sender(database_url) -> Iterator[PostgresBroker]:
    from receiptq.actors import app as actors

    broker = actors.receipt_broker(database_url)
    dramatiq.set_broker(broker)  # the in-process OCR step's breaker
    yield broker
    broker.close()


def retry(capsys, url: str, receipt_id: int) -> tuple[int, str, str]:
    code = cli.main(["receipts", "retry", str(receipt_id), "--url", url])
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err.strip()


def dead_letters(conn) -> list[dict]:
    return conn.execute("SELECT id, actor FROM receiptq.dead_letters ORDER BY id").fetchall()


@pytest.mark.timeout(240)
def test_stuck_receipts_run_again_to_the_end_and_others_are_refused(
    database_url, conn, sender, capsys
):
    url = database_url
    user = receipts.add_user(conn, "ana@example.test")
    image = images.render_receipt(images.random_receipt(random.Random(4)))
    # Stuck with no job: never queued (uploaded), and read by hand (waits for matching).
    jobless = receipts.store_receipt(conn, user["id"], image)
    read = receipts.store_receipt(conn, user["id"], image)
    receipts.read_receipt(conn, read, FixedOcr())
    # Stuck with a dead letter: its email job fails once, with no retry left, while no
    # SMTP server listens yet.
    mailed = receipts.store_receipt(conn, user["id"], image)
    receipts.read_receipt(conn, mailed, FixedOcr())
    context = receipts.match_receipt(conn, mailed)
    sender.get_actor("send_email").send_with_options(
        args=(user["id"], receipts.RECEIPT_TEMPLATE, context), max_retries=0
    )
    port = free_port()
    workers = start_dramatiq(
        "receiptq.actors", url, processes=1, threads=2, queues=("ocr", "matching", "email"),
        env={"RECEIPTQ_SMTP_HOST": "127.0.0.1", "RECEIPTQ_SMTP_PORT": str(port),
             "RECEIPTQ_POLL_INTERVAL_MS": "100"},
    )  # fmt: skip
    sink = SmtpSink()
    try:
        wait_until(lambda: dead_letters(conn), 60, "the email job's dead letter")
        [dead] = dead_letters(conn)
        sink.start(port=port)

        assert retry(capsys, url, jobless) == (
            0, f"receipt {jobless}: its pipeline starts again at ocr_receipt", "",
        )  # fmt: skip
        assert (
            retry(capsys, url, read)[1]
            == f"receipt {read}: its pipeline starts again at match_receipt"
        )
        assert retry(capsys, url, mailed)[1] == (
            f"receipt {mailed}: dead letter {dead['id']} (its send_email job) is back in its queue"
        )
        # Running again now: a job of each is queued or running.
        code, _, err = retry(capsys, url, jobless)
        assert code == 1
        assert err == (
            f"receiptq: error: receipt {jobless} is not stuck: it is uploaded and a job of its "
            "pipeline is queued or running"
        )
        assert dead_letters(conn) == []

        ids = [jobless, read, mailed]
        wait_until(
            lambda: receipts.status_counts(conn, ids=ids)["notified"] == 3,
            150,
            "the three receipts notified",
        )
    finally:
        stop(workers)
        sink.stop()
    assert (
        sorted(rcpt for _, rcpts, _ in sink.messages for rcpt in rcpts) == ["ana@example.test"] * 3
    )

    code, _, err = retry(capsys, url, mailed)
    assert (code, err) == (
        1, f"receiptq: error: receipt {mailed} is not stuck: it is notified: its pipeline is finished",
    )  # fmt: skip
    junk = receipts.store_receipt(conn, user["id"], b"not an image")
    conn.execute(
        "UPDATE receiptq_app.receipts SET status = 'failed', reason = 'not a readable image'"
        " WHERE id = %s",
        (junk,),
    )
    code, _, err = retry(capsys, url, junk)
    assert code == 1 and "failed for good (not a readable image)" in err
    code, _, err = retry(capsys, url, 999_999)
    assert (code, err) == (1, "receiptq: error: no receipt 999999")


def test_retry_json_says_what_was_done(database_url, conn, sender, capsys):
    user = receipts.add_user(conn, "bo@example.test")
    receipt_id = receipts.store_receipt(conn, user["id"], b"png")
    code = cli.main(["receipts", "retry", str(receipt_id), "--json", "--url", database_url])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {
        "receipt_id": receipt_id, "dead_letter_id": None, "actor": "ocr_receipt", "error": None,
    }  # fmt: skip
    jobs = conn.execute("SELECT actor, message FROM receiptq.jobs").fetchall()
    assert [(j["actor"], j["message"]["args"]) for j in jobs] == [("ocr_receipt", [receipt_id])]
    assert "pipe_target" in jobs[0]["message"]["options"]  # matching and email follow
