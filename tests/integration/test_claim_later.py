"""Claims on a queue with jobs not due yet. Those jobs wait at round 0 of their
(class, priority), between its round-0 jobs due now and its users' rounds, so one
scan in claim order steps over all of them whenever the round-0 jobs due now do not
fill the claim. On such a queue (queue_claim_path's ``later``) the claims take
job_claim_classes_later, which reads two ranges of the claim index per (class,
priority) instead: the same jobs in the same order, without reading the others."""

from __future__ import annotations

from typing import Any

import dramatiq
import psycopg
import pytest

from receiptq import db
from receiptq.tiers import UNTIERED
from tests_support import explain

CLAIM = {"worker_id": "host:1:abc", "lease_s": 30.0}


def fill(conn: psycopg.Connection[Any], scheduled: int) -> None:
    """Queue "q": jobs due now at priorities 0 and 5, untiered and tiered, some with
    users (in rounds, as the row trigger numbers them), and ``scheduled`` jobs due in
    an hour at each (class, priority)."""
    conn.execute(
        """
        INSERT INTO receiptq.jobs (message_id, queue, actor, priority, tier, user_id, message)
        SELECT 'd-' || i, 'q', 'a', (i % 2) * 5, CASE WHEN i % 3 = 0 THEN 'pro' END,
               CASE WHEN i % 4 = 0 THEN 'user-' || (i % 7) END, '{}'::jsonb
        FROM generate_series(1, 400) AS i
        """
    )
    conn.execute(
        """
        INSERT INTO receiptq.jobs (message_id, queue, actor, priority, tier, run_at, message)
        SELECT 's-' || i, 'q', 'a', (i %% 2) * 5, CASE WHEN i %% 3 = 0 THEN 'pro' END,
               now() + interval '1 hour', '{}'::jsonb
        FROM generate_series(1, %s) AS i
        """,
        [scheduled],
    )


def claimed(conn: psycopg.Connection[Any], statement: str, params: dict[str, Any]) -> list[int]:
    """The ids a claim statement takes, in claim order, rolled back."""
    with conn.transaction(force_rollback=True):
        rows = db.fetch_all(conn, statement, {"queue": "q", **CLAIM, **params})
    return [r["id"] for r in sorted(rows, key=lambda r: (r["priority"], r["user_round"], r["id"]))]


@pytest.mark.parametrize(
    "quotas", [[4, 4], [40, 40], [150, 60], [400, 400], [0, 30], [30, 0]], ids=str
)
def test_the_later_claims_take_the_jobs_the_plain_claims_take(conn, quotas):
    fill(conn, scheduled=300)
    classes = {"classes": [UNTIERED, "pro"], "quotas": quotas}
    assert claimed(conn, "job_claim_classes_later", classes) == claimed(
        conn, "job_claim_classes", classes
    )
    # The plain path (the untiered class alone) takes job_claim_classes_later too.
    plain = {"classes": [UNTIERED], "quotas": [quotas[0]], "limit": quotas[0]}
    assert claimed(conn, "job_claim_classes_later", plain) == claimed(
        conn, "job_claim_plain", plain
    )


def buffers(conn: psycopg.Connection[Any], statement: str, params: dict[str, Any]) -> int:
    """The buffers a claim statement touches (EXPLAIN (ANALYZE, BUFFERS), rolled back):
    an index entry skipped inside the scan is no row "removed by filter", but its page
    is read."""
    with conn.transaction(force_rollback=True):
        top = explain(conn, statement, {"queue": "q", **CLAIM, **params}, "ANALYZE, BUFFERS,")
    return int(top["Shared Hit Blocks"] + top["Shared Read Blocks"])


def test_the_later_claims_never_read_the_jobs_not_due(conn):
    """Five jobs due now per class and a claim of 16: the plain claims step over
    every job not due yet of the same (class, priority), about 200 index pages for
    60,000 of them; the later claims read a few pages more than with none queued."""
    conn.execute(
        "INSERT INTO receiptq.jobs (message_id, queue, actor, tier, message)"
        " SELECT 'd-' || i || t, 'q', 'a', nullif(t, ''), '{}'"
        " FROM generate_series(1, 5) AS i, unnest(ARRAY['', 'pro']) AS t"
    )
    classes = {"classes": [UNTIERED, "pro"], "quotas": [16, 16]}
    plain = {"classes": [UNTIERED], "quotas": [16], "limit": 16}
    claims = {
        "classes": ("job_claim_classes", classes), "plain": ("job_claim_plain", plain),
        "classes later": ("job_claim_classes_later", classes),
        "plain later": ("job_claim_classes_later", plain),
    }  # fmt: skip
    before = {label: buffers(conn, *claim) for label, claim in claims.items()}
    conn.execute(
        "INSERT INTO receiptq.jobs (message_id, queue, actor, tier, run_at, message)"
        " SELECT 's-' || i || t, 'q', 'a', nullif(t, ''), now() + interval '1 hour', '{}'"
        " FROM generate_series(1, 30000) AS i, unnest(ARRAY['', 'pro']) AS t"
    )
    conn.execute("ANALYZE receiptq.jobs")
    grown = {label: buffers(conn, *claim) - before[label] for label, claim in claims.items()}
    # 60,000 entries more in the claim index: its scans descend one level deeper.
    assert grown["classes"] > 150 and grown["plain"] > 150, grown
    assert grown["classes later"] < 60 and grown["plain later"] < 60, grown


def test_the_claim_path_says_whether_jobs_not_due_yet_are_queued(conn):
    later = lambda: db.fetch_one(conn, "queue_claim_path", {"queue": "q"})["later"]  # noqa: E731
    assert later() is False
    fill(conn, scheduled=0)
    assert later() is False
    conn.execute(
        "INSERT INTO receiptq.jobs (message_id, queue, actor, priority, tier, run_at, message)"
        " VALUES ('s-x', 'q', 'a', 5, 'pro', now() + interval '1 minute', '{}')"
    )
    assert later() is True
    conn.execute("UPDATE receiptq.jobs SET run_at = now() WHERE message_id = 's-x'")
    assert later() is False


def test_a_consumer_claims_with_the_later_statement_while_jobs_wait(broker, monkeypatch):
    """The consumer reads ``later`` with its claim settings and passes it on: on a queue
    with a job not due yet its claims go through job_claim_classes_later, on a queue
    without one through job_claim_plain."""
    claims = broker._claims
    seen: list[tuple[str, bool]] = []
    claim_classes = claims._claim_classes

    def spy(queue_name: str, classes: list[str], counts: list[int], later: bool) -> Any:
        seen.append((queue_name, later))
        return claim_classes(queue_name, classes, counts, later)

    monkeypatch.setattr(claims, "_claim_classes", spy)
    for queue in ("waits", "ready"):
        broker.declare_queue(queue)
        messages = [
            dramatiq.Message(queue_name=queue, actor_name="noop", args=(n,), kwargs={}, options={})
            for n in range(3)
        ]
        broker.enqueue_many(messages)
    broker.enqueue_many(
        [dramatiq.Message(queue_name="waits", actor_name="noop", args=(9,), kwargs={}, options={})],
        delay=3_600_000,
    )
    for queue in ("waits", "ready"):
        consumer = broker.consume(queue, prefetch=2, timeout=5_000)
        assert next(consumer) is not None
        consumer.close()
    assert seen == [("waits", True)]  # "ready" claimed with job_claim_plain
