"""Known database contents and app clients shared by the web tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from dramatiq.message import Message
from starlette.testclient import TestClient

from receiptq import db
from receiptq.stats import BUCKETS
from receiptq.web.app import create_app
from tests_support import start_deliveries

LOCAL = "http://127.0.0.1"


def hist(counts: dict[int, int]) -> list[int]:
    histogram = [0] * BUCKETS
    for bucket, count in counts.items():
        histogram[bucket] = count
    return histogram


def stats_row(minute, queue, actor, **counts: Any) -> dict[str, Any]:
    row = {
        "minute": minute,
        "queue": queue,
        "actor": actor,
        "enqueued": 0,
        "succeeded": 0,
        "failed": 0,
        "retried": 0,
        "dead_lettered": 0,
        "postponed": 0,
        "run_ms_sum": 0.0,
        "run_ms_hist": [],
        "latency_ms_sum": 0.0,
        "latency_ms_hist": [],
    }
    row.update(counts)
    return row


def send(broker, queue: str, actor: str, *, args=(), tier=None, delay_ms=None) -> None:
    options = {"tier": tier} if tier else {}
    message = Message(queue_name=queue, actor_name=actor, args=args, kwargs={}, options=options)
    broker.enqueue(message, delay=delay_ms)


def dead_letter(broker, conn, queue: str, error_type: str, error: str) -> None:
    """Claim every ready job of ``queue`` and move it to the dead letters."""
    for job in broker.claim(queue, 100):
        params = {
            "id": job.job_id,
            "attempt": job.attempt,
            "reason": "failed",
            "error_type": error_type,
            "error": error,
            "traceback": f"Traceback: {error}",
        }
        db.fetch_all(conn, "job_dead_letter", params)


def fill_known_contents(broker, conn) -> dict[str, Any]:
    """Jobs, dead letters and statistics whose figures the tests know.

    ocr: 3 ready (tier pro), 1 scheduled (no tier). email (tier free): 1 running (a
    thread of the test broker's worker started it), 1 reserved (claimed, not
    started), 1 ready. Dead letters: 2 of ocr_receipt (queue doomed_ocr), 1 of send_email
    (queue doomed_email). Statistics: ocr_receipt 8 done + 2 failed this minute,
    send_email 5 done two minutes ago, 100 done 30 minutes ago (history only).
    """
    for queue in ("ocr", "email", "doomed_ocr", "doomed_email"):
        broker.declare_queue(queue)
    send(broker, "doomed_ocr", "ocr_receipt", args=(1,))
    send(broker, "doomed_ocr", "ocr_receipt", args=(2,))
    dead_letter(broker, conn, "doomed_ocr", "TimeoutError", "OCR engine timed out after 30 s")
    send(broker, "doomed_email", "send_email", args=("a@example.com",))
    dead_letter(broker, conn, "doomed_email", "SMTPRecipientsRefused", "mailbox unavailable")
    send(broker, "email", "send_email", args=("b@example.com",), tier="free")
    send(broker, "email", "send_email", args=("r@example.com",), tier="free")
    started, _reserved = broker.claim("email", 2)
    start_deliveries(broker, started)
    send(broker, "email", "send_email", args=("c@example.com",), tier="free")
    for receipt in (10, 11, 12):
        send(broker, "ocr", "ocr_receipt", args=(receipt,), tier="pro")
    send(broker, "ocr", "ocr_receipt", args=(13,), delay_ms=3_600_000)

    now = db.fetch_one(conn, "db_now")["now"]
    minute = now.replace(second=0, microsecond=0)
    rows = [
        stats_row(
            minute, "ocr", "ocr_receipt", enqueued=10, succeeded=8, failed=2, retried=1,
            dead_lettered=2, run_ms_sum=50.0, run_ms_hist=hist({3: 10}),
            latency_ms_sum=10.0, latency_ms_hist=hist({0: 10}),
        ),
        stats_row(minute - timedelta(minutes=2), "email", "send_email", succeeded=5,
                  run_ms_sum=2500.0, run_ms_hist=hist({18: 5})),
        stats_row(minute - timedelta(minutes=30), "email", "send_email", succeeded=100),
    ]  # fmt: skip
    db.execute_many(conn, "stats_add", rows)
    return {"now": now}


@contextmanager
def client(url: str, **options: Any) -> Iterator[TestClient]:
    """A TestClient (lifespan run) on the dashboard of ``url``, as a local browser."""
    options.setdefault("sample_interval_s", 60.0)
    with TestClient(create_app(url, **options), base_url=LOCAL) as test_client:
        yield test_client


def csrf_token(test_client: TestClient) -> str:
    page = test_client.get("/").text
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert match is not None, "the page embeds no CSRF token"
    return match.group(1)
