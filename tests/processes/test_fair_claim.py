"""The claim with tiers, caps and pause, against the real claim function."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest

from receiptq import db
from receiptq.broker import MessageError, PostgresBroker
from receiptq.tiers import StrideState
from tests_support import start_workers, stop


def send_tiered(broker: PostgresBroker, actor: Any, counts: dict[str, int]) -> None:
    for tier, count in counts.items():
        broker.enqueue_many(
            [actor.message_with_options(args=(i,), tier=tier or None) for i in range(count)]
        )


@pytest.fixture
def ocr(broker):
    @dramatiq.actor(queue_name="fair", actor_name="ocr_receipt")
    def ocr_receipt(n):
        pass

    return ocr_receipt


@pytest.fixture(params=["locked", "fair"])
def path(request):
    """Both claim paths share by the same rule: the claim function and the fast path."""
    return request.param


def claim_all(broker: PostgresBroker, path: str, batches: int, size: int = 10) -> list[Any]:
    """Claim batches*size jobs in claims of up to `size`, as one consumer does.

    A claim may take fewer than `size` when a class it expected work from turned
    out idle (it learns that from the claim), so this claims until the count is met.
    """
    stride = StrideState()
    claimed: list[Any] = []
    for _ in range(batches * 2):
        if len(claimed) >= batches * size:
            break
        claimed.extend(
            broker.claim("fair", min(size, batches * size - len(claimed)), stride, path=path)
        )
    return claimed


def test_saturated_tiers_are_claimed_in_proportion_to_their_weights(broker, ocr, path):
    send_tiered(broker, ocr, {"enterprise": 2000, "pro": 2000, "free": 2000})
    claimed = claim_all(broker, path, batches=100)
    tiers = [m.options.get("tier") for m in claimed]
    assert len(tiers) == 1000
    assert tiers.count("enterprise") == pytest.approx(600, abs=20)
    assert tiers.count("pro") == pytest.approx(300, abs=20)
    assert tiers.count("free") == pytest.approx(100, abs=20)


def test_free_jobs_complete_within_their_share_under_a_flood_of_higher_tiers(broker, ocr, path):
    send_tiered(broker, ocr, {"enterprise": 3000, "pro": 3000, "free": 50})
    claimed = claim_all(broker, path, batches=60)
    free_positions = [i for i, m in enumerate(claimed) if m.options.get("tier") == "free"]
    assert len(free_positions) == 50, "every free job was claimed"
    # Share 1/10: the 50 free jobs are through after about 500 claims, flood or not.
    assert free_positions[-1] < 500 + 20


def test_a_tier_with_no_work_leaves_its_share_to_the_others(broker, ocr, path):
    send_tiered(broker, ocr, {"enterprise": 1000, "pro": 1000})
    tiers = [m.options.get("tier") for m in claim_all(broker, path, batches=30)]
    assert tiers.count("enterprise") == pytest.approx(200, abs=15)
    assert tiers.count("pro") == pytest.approx(100, abs=15)


def test_jobs_without_a_tier_and_of_unknown_tiers_are_still_claimed(broker, ocr, conn):
    send_tiered(broker, ocr, {"": 5})
    conn.execute(
        "UPDATE receiptq.jobs SET tier = 'legacy' WHERE id IN (SELECT id FROM receiptq.jobs LIMIT 2)"
    )
    consumer = broker.consume("fair", prefetch=10, timeout=500)
    got = [next(consumer) for _ in range(5)]
    assert all(m is not None for m in got)
    consumer.close()


def test_unknown_tier_is_refused_at_send_and_nothing_is_written(broker, ocr, conn):
    with pytest.raises(MessageError, match="unknown tier 'platinum'"):
        ocr.send_with_options(args=(1,), tier="platinum")
    assert conn.execute("SELECT count(*) AS n FROM receiptq.jobs").fetchone()["n"] == 0


def test_within_a_tier_lower_priority_runs_first(broker, ocr, path):
    for priority in (5, 1, 3):
        ocr.send_with_options(args=(priority,), tier="pro", priority=priority)
    stride = StrideState()
    claimed = [m for _ in range(3) for m in broker.claim("fair", 1, stride, path=path)]
    assert [m.args[0] for m in claimed] == [1, 3, 5]


def test_paused_queue_accepts_jobs_but_hands_none_out_until_resumed(broker, ocr, conn):
    db.execute(conn, "queue_pause", {"queue": "fair"})
    ocr.send(1)
    assert broker.claim("fair", 10) == []
    db.execute(conn, "queue_resume", {"queue": "fair"})
    assert len(broker.claim("fair", 10)) == 1


def test_capped_queue_never_hands_out_more_than_its_cap(broker, ocr, conn):
    db.execute(conn, "queue_set_cap", {"queue": "fair", "max_running": 3})
    send_tiered(broker, ocr, {"": 10})
    first = broker.claim("fair", 10)
    assert len(first) == 3
    assert broker.claim("fair", 10) == []
    broker.finish(first[0])
    assert broker.wait_for_acks(5)
    assert len(broker.claim("fair", 10)) == 1


def test_cap_holds_across_real_worker_processes(database_url, conn):
    """2 processes x 4 threads, cap 3: the peak concurrency is exactly 3."""
    conn.execute("CREATE TABLE test_spans (job_no integer, edge integer, at timestamptz)")
    db.execute(conn, "queue_set_cap", {"queue": "capped", "max_running": 3})
    producer = PostgresBroker(database_url)
    dramatiq.set_broker(producer)
    capped = dramatiq.actor(lambda job_no: None, actor_name="capped", queue_name="capped")
    producer.enqueue_many([capped.message(n) for n in range(24)])
    workers = start_workers(database_url, processes=2, threads=4)
    try:
        producer.join("capped", timeout=60_000)
    finally:
        stop(workers)
        producer.close()
    peak = conn.execute(
        "SELECT max(running) AS peak FROM (SELECT sum(edge) OVER (ORDER BY at, edge) AS running"
        " FROM test_spans) AS s"
    ).fetchone()["peak"]
    assert conn.execute("SELECT count(*) AS n FROM test_spans").fetchone()["n"] == 48
    assert peak == 3


def test_fast_paths_refuse_a_paused_or_capped_queue(broker, ocr, conn):
    send_tiered(broker, ocr, {"": 4})
    db.execute(conn, "queue_set_cap", {"queue": "fair", "max_running": 1})
    assert broker.claim_path("fair") == "locked"
    assert broker.claim("fair", 10, path="plain") == []
    assert broker.claim("fair", 10, path="fair") == []
    assert len(broker.claim("fair", 10)) == 1  # the claim function honours the cap
    db.execute(conn, "queue_set_cap", {"queue": "fair", "max_running": None})
    assert broker.claim_path("fair") == "plain"
    assert len(broker.claim("fair", 10, path="plain")) == 3
    send_tiered(broker, ocr, {"pro": 1})
    assert broker.claim_path("fair") == "fair"
    db.execute(conn, "queue_pause", {"queue": "fair"})
    assert broker.claim_path("fair") == "locked"


def test_consumer_shares_claims_fairly_once_tiered_jobs_arrive(broker, ocr):
    send_tiered(broker, ocr, {"": 1})
    consumer = broker.consume("fair", prefetch=10, timeout=2000)
    try:
        first = next(consumer)
        assert first is not None and first.options.get("tier") is None
        consumer.ack(first)
        send_tiered(broker, ocr, {"enterprise": 600, "free": 600})
        seen = []
        while len(seen) < 350:
            message = next(consumer)
            assert message is not None, "tiered jobs are claimed"
            seen.append(message.options.get("tier"))
            consumer.ack(message)
        # enterprise 6 : free 1 while both have work
        assert seen.count("free") == pytest.approx(50, abs=12)
    finally:
        consumer.close()


def test_actor_cap_holds_across_real_worker_processes_and_leaves_other_actors_alone(
    database_url, conn
):
    """2 processes x 4 threads on a queue two actors share, one capped at 2: that one
    peaks at exactly 2, while the other runs beside it beyond the cap."""
    conn.execute("CREATE TABLE test_actor_spans (actor text, job_no integer, edge integer,"
                 " at timestamptz)")  # fmt: skip
    db.execute(conn, "actor_cap_set", {"queue": "mixed", "actor": "mixed_capped", "max_running": 2})
    producer = PostgresBroker(database_url)
    dramatiq.set_broker(producer)
    kinds = [dramatiq.actor(lambda job_no: None, actor_name=name, queue_name="mixed")
             for name in ("mixed_capped", "mixed_free")]  # fmt: skip
    producer.enqueue_many([kind.message(n) for n in range(16) for kind in kinds])
    workers = start_workers(database_url, processes=2, threads=4)
    try:
        producer.join("mixed", timeout=60_000)
    finally:
        stop(workers)
        producer.close()
    peaks = {
        r["actor"]: r["peak"]
        for r in conn.execute(
            "SELECT actor, max(running) AS peak FROM (SELECT actor, sum(edge) OVER"
            " (PARTITION BY actor ORDER BY at, edge) AS running FROM test_actor_spans) AS s"
            " GROUP BY actor"
        )
    }
    assert conn.execute("SELECT count(*) AS n FROM test_actor_spans").fetchone()["n"] == 64
    assert peaks["mixed_capped"] == 2
    assert peaks["mixed_free"] > 2, peaks
