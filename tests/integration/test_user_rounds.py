"""Fairness between the users of one tier class (migration 0006: user rounds)."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest

from receiptq.broker import PostgresBroker
from receiptq.tiers import StrideState


@pytest.fixture
def ocr(broker):
    @dramatiq.actor(queue_name="ocr", actor_name="ocr_receipt")
    def ocr_receipt(n):
        pass

    return ocr_receipt


def send(broker: PostgresBroker, actor: Any, user: str | None, count: int, **options: Any) -> None:
    for start in range(0, count, 1000):
        broker.enqueue_many(
            [
                actor.message_with_options(args=(f"{user}-{i}",), user_id=user, **options)
                for i in range(start, min(count, start + 1000))
            ]
        )


def claim_users(broker: PostgresBroker, count: int, path: str = "fair") -> list[str]:
    """The users of the next ``count`` claimed jobs, in claim order (claims of 10)."""
    stride, users = StrideState(), []
    while len(users) < count:
        batch = broker.claim("ocr", min(10, count - len(users)), stride, path=path)
        assert batch, "a claim came back empty while jobs were queued"
        users += [m.options.get("user_id") for m in batch]
    return users


def rounds(conn: Any, user: str) -> list[int]:
    return [
        r["user_round"]
        for r in conn.execute(
            "SELECT user_round FROM receiptq.jobs WHERE user_id = %s AND state = 'queued'"
            " ORDER BY id",
            [user],
        )
    ]


@pytest.mark.parametrize("path", ["fair", "locked"])
def test_a_users_first_receipt_does_not_wait_behind_another_users_backlog(broker, ocr, path):
    send(broker, ocr, "flood", 3000, tier="pro")
    send(broker, ocr, "newcomer", 1, tier="pro")
    users = claim_users(broker, 20, path)
    # The newcomer starts at the current round, level with the flood's next job.
    assert users.index("newcomer") <= 1, users


def test_users_backlogs_interleave_one_job_per_user_per_round(broker, ocr):
    for user in ("ann", "bob", "cy"):
        send(broker, ocr, user, 100, tier="free")
    users = claim_users(broker, 60)
    for start in range(0, 60, 3):
        assert sorted(users[start : start + 3]) == ["ann", "bob", "cy"], users


def test_a_user_who_comes_back_starts_at_the_current_round_not_at_their_old_one(broker, ocr, conn):
    send(broker, ocr, "flood", 1000)
    send(broker, ocr, "back", 2)
    claim_users(broker, 600)  # flood and back: both of back's jobs ran in the first rounds
    send(broker, ocr, "back", 5)
    now_at = min(r for r in rounds(conn, "flood") if r)
    assert rounds(conn, "back") == list(range(now_at, now_at + 5))
    # ... and a newcomer with a backlog of its own shares with the flood, it does not
    # get ahead of it by its whole backlog.
    send(broker, ocr, "late", 300)
    users = claim_users(broker, 40)
    assert users.count("back") == 5
    assert 15 <= users.count("late") <= 20 and 15 <= users.count("flood") <= 20, users


def test_a_bulk_send_for_one_user_gets_consecutive_rounds(broker, ocr, conn):
    send(broker, ocr, "ann", 5)
    send(broker, ocr, "ann", 3)
    assert rounds(conn, "ann") == [1, 2, 3, 4, 5, 6, 7, 8]


def test_jobs_without_a_user_or_not_due_yet_have_no_round(broker, ocr, conn):
    send(broker, ocr, None, 2)
    for i in range(2):
        ocr.send_with_options(args=(i,), user_id="ann", delay=60_000)
    assert [r["user_round"] for r in conn.execute("SELECT user_round FROM receiptq.jobs")] == [
        0,
        0,
        0,
        0,
    ]


def test_a_postponed_job_loses_its_round_and_runs_first_once_due(broker, ocr, conn):
    send(broker, ocr, "ann", 3)
    (first,) = broker.claim("ocr", 1)
    broker.postpone(first, delay_ms=60_000)
    assert broker.wait_for_acks(5)
    row = conn.execute(
        "SELECT user_round, run_at > now() AS later FROM receiptq.jobs WHERE id = %s",
        [first.job_id],
    ).fetchone()
    assert row == {"user_round": 0, "later": True}
    conn.execute("UPDATE receiptq.jobs SET run_at = now() WHERE id = %s", [first.job_id])
    (again,) = broker.claim("ocr", 1)
    assert again.job_id == first.job_id


def test_sql_enqueue_gives_rounds_too(broker, conn):
    for _ in range(2):
        conn.execute(
            "SELECT receiptq.enqueue('ocr_receipt', 'ocr', '[1]'::jsonb, user_id => 'ann')"
        )
    assert rounds(conn, "ann") == [1, 2]


def test_under_a_50000_receipt_flood_another_users_first_receipt_runs_next(broker, ocr):
    """The issue's case, at its size: one user has 50,000 receipts queued."""
    send(broker, ocr, "flood", 50_000, tier="pro")
    send(broker, ocr, "newcomer", 1, tier="pro")
    users = claim_users(broker, 10)
    assert users.index("newcomer") <= 1, users


def test_workers_run_a_newcomers_job_among_the_first_while_a_flood_is_queued(broker, conn):
    """Through a real Dramatiq worker: the consumer's claims keep the rounds' order."""
    ran: list[str] = []

    @dramatiq.actor(queue_name="ocr", actor_name="ocr_record")
    def ocr_record(user):
        ran.append(user)

    broker.enqueue_many(
        [ocr_record.message_with_options(args=("flood",), user_id="flood") for _ in range(500)]
    )
    ocr_record.send_with_options(args=("newcomer",), user_id="newcomer")
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        broker.join("ocr", timeout=30_000)
    finally:
        worker.stop()
    assert len(ran) == 501
    # The first claim (a prefetch of 2 threads x 2) already holds it.
    assert ran.index("newcomer") < 4, ran[:10]
