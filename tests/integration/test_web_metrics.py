"""/metrics: Prometheus text computed from PostgreSQL at scrape time."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from receiptq import db
from receiptq.stats import BUCKET_BOUNDS_MS
from receiptq.web.metrics import breaker_states, histogram_buckets
from web_helpers import client, fill_known_contents


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    with client(url) as web:
        response = web.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_report_the_known_contents(database_url, broker, conn):
    fill_known_contents(broker, conn)
    for worker_id in ("w-alive", "w-lost"):
        db.execute(conn, "worker_register", {"id": worker_id, "host": "h", "pid": 1, "queues": []})
    conn.execute(
        "UPDATE receiptq.workers SET last_heartbeat_at = now() - interval '10 minutes'"
        " WHERE id = 'w-lost'"
    )
    samples = scrape(database_url)

    def jobs(queue, state):
        return samples[("receiptq_queue_jobs", (("queue", queue), ("state", state)))]

    assert (jobs("ocr", "ready"), jobs("ocr", "scheduled"), jobs("ocr", "running")) == (3, 1, 0)
    assert (jobs("email", "ready"), jobs("email", "running"), jobs("email", "reserved")) == (
        1,
        1,
        1,
    )
    assert (jobs("doomed_ocr", "dead"), jobs("doomed_email", "dead")) == (2, 1)
    assert samples[("receiptq_queue_oldest_ready_seconds", (("queue", "ocr"),))] >= 0
    # w-alive, and the test broker's worker that holds the email jobs.
    assert samples[("receiptq_workers", (("state", "alive"),))] == 2
    assert samples[("receiptq_workers", (("state", "lost"),))] == 1

    ocr = {"actor": "ocr_receipt", "queue": "ocr"}
    email = {"actor": "send_email", "queue": "email"}

    def value(name, labels, **more):
        return samples[(name, tuple(sorted({**labels, **more}.items())))]

    assert value("receiptq_jobs_done_total", ocr) == 8
    assert value("receiptq_jobs_done_total", email) == 105  # every minute kept
    assert value("receiptq_jobs_failed_total", ocr) == 2
    assert value("receiptq_jobs_retried_total", ocr) == 1
    assert value("receiptq_jobs_dead_lettered_total", ocr) == 2
    assert value("receiptq_jobs_enqueued_total", ocr) == 10

    # 10 runs in the (3, 5] ms bucket; 5 email runs in the (1, 2] s bucket.
    assert value("receiptq_job_run_seconds_bucket", ocr, le="0.003") == 0
    assert value("receiptq_job_run_seconds_bucket", ocr, le="0.005") == 10
    assert value("receiptq_job_run_seconds_bucket", ocr, le="+Inf") == 10
    assert value("receiptq_job_run_seconds_count", ocr) == 10
    assert value("receiptq_job_run_seconds_sum", ocr) == pytest.approx(0.05)
    assert value("receiptq_job_run_seconds_bucket", email, le="1") == 0
    assert value("receiptq_job_run_seconds_bucket", email, le="2") == 5
    assert value("receiptq_job_latency_seconds_bucket", ocr, le="0.001") == 10
    assert value("receiptq_job_latency_seconds_sum", ocr) == pytest.approx(0.01)


def test_metrics_follow_the_database_between_scrapes(database_url, broker, conn):
    fill_known_contents(broker, conn)
    ready = ("receiptq_queue_jobs", (("queue", "ocr"), ("state", "ready")))
    assert scrape(database_url)[ready] == 3
    broker.claim("ocr", 2)
    assert scrape(database_url)[ready] == 1


def test_histogram_buckets_are_cumulative_in_seconds():
    counts = [0] * (len(BUCKET_BOUNDS_MS) + 1)
    counts[0], counts[2], counts[-1] = 1, 2, 4
    buckets = dict(histogram_buckets(counts))
    assert buckets["0.001"] == 1 and buckets["0.002"] == 1 and buckets["0.003"] == 3
    assert buckets["3600"] == 3 and buckets["+Inf"] == 7
    assert list(buckets)[-1] == "+Inf"


@pytest.mark.parametrize(
    "breakers",
    [
        {"ocr": {"state": "OPEN", "failures": 5}, "smtp": {"state": "closed"}},
        {"ocr": "open", "smtp": "closed"},
        [{"name": "ocr", "state": "open"}, {"name": "smtp", "state": "closed"}],
    ],
)
def test_breaker_states_are_read_from_any_snapshot_shape(breakers):
    assert sorted(breaker_states({"breakers": breakers})) == [("ocr", "open"), ("smtp", "closed")]


def test_no_breakers_key_means_no_breaker_metrics():
    assert breaker_states({"queues": {}}) == []


def test_metrics_report_each_breakers_state(database_url, conn):
    for name in ("ocr", "email"):
        db.execute(conn, "breaker_register", {"name": name, "fail_max": 5, "reset_timeout_s": 30})
    db.execute(conn, "breaker_set_state", {"name": "ocr", "state": "open"})
    samples = scrape(database_url)

    def state(breaker, name):
        return samples[("receiptq_breaker_state", (("breaker", breaker), ("state", name)))]

    assert (state("ocr", "open"), state("ocr", "closed"), state("ocr", "half-open")) == (1, 0, 0)
    assert (state("email", "open"), state("email", "closed")) == (0, 1)
