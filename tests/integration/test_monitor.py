"""receiptq.monitor: the figures of `receiptq status` (windows, percentiles, live counts)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from dramatiq.message import Message

from receiptq import db, monitor
from receiptq.stats import BUCKETS


def hist(counts: dict[int, int]) -> list[int]:
    """A histogram with the given counts per bucket index."""
    histogram = [0] * BUCKETS
    for bucket, count in counts.items():
        histogram[bucket] = count
    return histogram


def stats_row(minute, queue="q1", actor="a", *, succeeded=0, failed=0, run=None, latency=None):
    return {
        "minute": minute,
        "queue": queue,
        "actor": actor,
        "enqueued": 0,
        "succeeded": succeeded,
        "failed": failed,
        "retried": 0,
        "dead_lettered": 0,
        "postponed": 0,
        "run_ms_sum": 0.0,
        "run_ms_hist": run or [],
        "latency_ms_sum": 0.0,
        "latency_ms_hist": latency or [],
    }


# -- pure figures ---------------------------------------------------------------------

NOW = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
MINUTE = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_windows_are_whole_minutes_back_from_the_current_one():
    rows = [
        stats_row(MINUTE + timedelta(minutes=back), succeeded=1)
        for back in (0, -1, -2, -5, -6, -60, -61)
    ]
    stats = monitor.window_stats(rows, NOW)["q1"]
    assert stats.done == {1: 2, 5: 4, 60: 6}


def test_queue_without_rows_in_the_last_hour_is_not_counted():
    rows = [stats_row(MINUTE - timedelta(minutes=61), queue="old", succeeded=5)]
    assert monitor.window_stats(rows, NOW) == {}


def test_throughput_divides_by_the_time_the_window_covers():
    stats = monitor.window_stats([stats_row(MINUTE, succeeded=90)], NOW)["q1"]
    figures = monitor.queue_figures(None, 0, stats, NOW)
    # 12:00:30: the 1-minute window holds 11:59 and 12:00 so far, 90 seconds.
    assert figures["throughput_per_s_1m"] == pytest.approx(1.0)


def test_percentiles_and_success_rate_are_none_without_finished_jobs():
    figures = monitor.queue_figures(None, 0, monitor.WindowStats(), NOW)
    assert figures["success_rate_5m"] is None
    assert figures["latency_p50_ms"] is None and figures["run_p95_ms"] is None
    assert figures["oldest_ready_s"] is None and figures["throughput_per_s_1m"] == 0


def test_worker_is_lost_once_its_heartbeat_is_older_than_the_limit():
    row = {"id": "w", "host": "h", "pid": 1, "queues": ["q"], "in_flight": 0}
    assert monitor.worker_figures({**row, "heartbeat_age_s": 29.9}, 30.0)["alive"]
    assert not monitor.worker_figures({**row, "heartbeat_age_s": 30.1}, 30.0)["alive"]
    assert monitor.worker_figures({**row, "heartbeat_age_s": -0.2}, 30.0)["heartbeat_age_s"] == 0


# -- snapshot against a database with known contents ----------------------------------


def send(broker, queue, *, priority=0, delay_ms=None, eta_ms=None):
    options = {"priority": priority}
    if eta_ms is not None:
        options["eta"] = eta_ms
    message = Message(queue_name=queue, actor_name="a", args=(), kwargs={}, options=options)
    broker.enqueue(message, delay=delay_ms)


def dead_letter_all_claimable(broker, conn, queue, n):
    for job in broker.claim(queue, n):
        params = {
            "id": job.job_id,
            "attempt": job.attempt,
            "reason": "failed",
            "error_type": "RuntimeError",
            "error": "boom",
            "traceback": "Traceback: boom",
        }
        db.fetch_all(conn, "job_dead_letter", params)


@pytest.fixture
def known_contents(broker, conn):
    """Jobs, dead letters, statistics and workers whose figures are known."""
    for queue in ("q1", "q2", "deadonly"):
        broker.declare_queue(queue)
    # q1: 2 dead letters; 3 ready (one of them ready for 10 minutes), 1 running, 2 scheduled.
    send(broker, "q1", priority=-1)
    send(broker, "q1", priority=-1)
    dead_letter_all_claimable(broker, conn, "q1", 2)
    old_eta_ms = int(time.time() * 1000) - 600_000
    send(broker, "q1", priority=5, eta_ms=old_eta_ms)
    for _ in range(3):
        send(broker, "q1")
    assert len(broker.claim("q1", 1)) == 1
    send(broker, "q1", delay_ms=3_600_000)
    send(broker, "q1", delay_ms=3_600_000)
    # q2: 1 ready. deadonly: a dead letter only.
    send(broker, "q2")
    send(broker, "deadonly")
    dead_letter_all_claimable(broker, conn, "deadonly", 1)

    now = db.fetch_one(conn, "db_now")["now"]
    minute = now.replace(second=0, microsecond=0)

    def at(back):
        return minute - timedelta(minutes=back)

    rows = [
        stats_row(at(0), succeeded=10, failed=2, run=hist({3: 10})),
        stats_row(at(0), actor="b", succeeded=5),
        stats_row(at(1), succeeded=20),
        stats_row(at(3), succeeded=30, failed=4, run=hist({9: 10})),
        stats_row(at(5), succeeded=40, latency=hist({0: 4})),
        stats_row(at(6), succeeded=50, failed=6, run=hist({20: 100}), latency=hist({25: 1000})),
        stats_row(at(60), succeeded=60),
        stats_row(at(61), succeeded=1000, failed=100),
        stats_row(at(60), queue="statsonly", succeeded=7),
        stats_row(at(61), queue="ancient", succeeded=1),
    ]
    db.execute_many(conn, "stats_add", rows)

    for worker_id in ("w-fresh", "w-lost"):
        identity = {"id": worker_id, "host": "h", "pid": 1, "queues": ["q1"]}
        db.execute(conn, "worker_register", identity)
    conn.execute(
        "UPDATE receiptq.workers SET last_heartbeat_at = now() - interval '120 seconds'"
        " WHERE id = 'w-lost'"
    )
    old_run_at = datetime.fromtimestamp(old_eta_ms / 1000, tz=UTC)
    return {"now": now, "old_run_at": old_run_at}


def test_snapshot_figures_match_known_contents(conn, known_contents):
    now = known_contents["now"]
    snap = monitor.snapshot(conn, now=now, alive_s=30)

    assert list(snap["queues"]) == ["deadonly", "q1", "q2", "statsonly"]
    for figures in snap["queues"].values():
        assert list(figures) == [*monitor.QUEUE_FIELDS, *monitor.SETTING_FIELDS]
    assert list(snap["totals"]) == list(monitor.QUEUE_FIELDS)
    span_1m_s = (now - now.replace(second=0, microsecond=0)).total_seconds() + 60
    old_age_s = (now - known_contents["old_run_at"]).total_seconds()

    q1 = snap["queues"]["q1"]
    assert q1 == {
        "queued": 3,
        "scheduled": 2,
        "running": 0,  # claimed, and no worker thread started it: reserved
        "reserved": 1,
        "dead": 2,
        "oldest_ready_s": pytest.approx(old_age_s, abs=1e-3),
        "done_1m": 35,
        "done_5m": 105,
        "done_60m": 215,
        "failed_1m": 2,
        "failed_5m": 6,
        "failed_60m": 12,
        "throughput_per_s_1m": pytest.approx(35 / span_1m_s),
        "latency_p50_ms": pytest.approx(0.5),
        "latency_p95_ms": pytest.approx(0.95),
        "run_p50_ms": pytest.approx(5.0),
        "run_p95_ms": pytest.approx(48.0),
        "success_rate_5m": pytest.approx(105 / 111),
        "paused": False,
        "max_running": None,
        "prefetch": None,
        "actor_caps": {},
    }

    q2 = snap["queues"]["q2"]
    assert (q2["queued"], q2["scheduled"], q2["running"], q2["dead"]) == (1, 0, 0, 0)
    assert 0 <= q2["oldest_ready_s"] < 60
    assert q2["done_60m"] == 0 and q2["success_rate_5m"] is None and q2["run_p50_ms"] is None

    assert snap["queues"]["deadonly"]["dead"] == 1
    assert snap["queues"]["deadonly"]["queued"] == 0
    statsonly = snap["queues"]["statsonly"]
    assert (statsonly["done_60m"], statsonly["done_5m"], statsonly["queued"]) == (7, 0, 0)

    assert snap["totals"] == {
        "queued": 4,
        "scheduled": 2,
        "running": 0,
        "reserved": 1,
        "dead": 3,
        "oldest_ready_s": pytest.approx(old_age_s, abs=1e-3),
        "done_1m": 35,
        "done_5m": 105,
        "done_60m": 222,
        "failed_1m": 2,
        "failed_5m": 6,
        "failed_60m": 12,
        "throughput_per_s_1m": pytest.approx(35 / span_1m_s),
        "latency_p50_ms": pytest.approx(0.5),
        "latency_p95_ms": pytest.approx(0.95),
        "run_p50_ms": pytest.approx(5.0),
        "run_p95_ms": pytest.approx(48.0),
        "success_rate_5m": pytest.approx(105 / 111),
    }

    workers = {w["id"]: w for w in snap["workers"]}
    assert workers["w-fresh"]["alive"] and workers["w-fresh"]["heartbeat_age_s"] < 10
    assert workers["w-fresh"]["queues"] == ["q1"] and workers["w-fresh"]["pid"] == 1
    assert not workers["w-lost"]["alive"]
    assert workers["w-lost"]["heartbeat_age_s"] == pytest.approx(120, abs=10)
    assert snap["generated_at"] == now.isoformat()


def test_snapshot_reads_the_database_clock_and_accepts_a_url(database_url, known_contents):
    snap = monitor.snapshot(database_url)
    generated = datetime.fromisoformat(snap["generated_at"])
    assert generated >= known_contents["now"]
    assert snap["queues"]["q1"]["queued"] == 3 and snap["totals"]["dead"] == 3
