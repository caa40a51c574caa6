"""Resource throttling of workers, and the tier resolver middleware."""

from __future__ import annotations

import dramatiq
import pytest

from receiptq import monitor
from receiptq.broker import PostgresBroker
from receiptq.middleware.tier_resolver import TierResolver
from receiptq.pg.resources import Sample, Thresholds, throttle_reason


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (Sample(50, 50, 50), None),
        (Sample(99, 50, 50), None),  # CPU is off by default: busy workers use their CPU
        (Sample(50, 96, 50), "memory at 96% (limit 95%)"),
        (Sample(50, 50, 97), "database connections at 97% (limit 95%)"),
        (Sample(50, 50, None), None),
    ],
)
def test_throttle_reason_names_the_first_resource_over_its_limit(sample, expected):
    assert throttle_reason(sample, Thresholds()) == expected


def test_cpu_limit_applies_when_configured():
    assert throttle_reason(Sample(91, 10, 10), Thresholds(cpu_percent=90)) == (
        "cpu at 91% (limit 90%)"
    )


def test_throttled_worker_claims_nothing_and_says_why(database_url, monkeypatch, conn):
    monkeypatch.setenv("RECEIPTQ_THROTTLE_MEMORY_PERCENT", "0.01")  # always over
    broker = PostgresBroker(database_url, poll_interval_ms=50)
    dramatiq.set_broker(broker)
    try:

        @dramatiq.actor(queue_name="busy")
        def job():
            pass

        job.send()
        consumer = broker.consume("busy", prefetch=4, timeout=300)
        assert next(consumer) is None, "a throttled worker does not claim"
        [worker] = monitor.snapshot(conn)["workers"]
        assert worker["throttled"].startswith("memory at ")
        assert worker["memory_percent"] > 0
        # Back under the limit: the next heartbeat lets it claim again.
        monkeypatch.setenv("RECEIPTQ_THROTTLE_MEMORY_PERCENT", "100")
        broker._heartbeat._thresholds = type(broker._heartbeat._thresholds).from_env()
        broker.heartbeat_now()
        assert next(consumer) is not None
        consumer.close()
    finally:
        broker.close()


def test_tier_resolver_fills_the_tier_from_the_user_and_caches_it(broker, conn):
    lookups = []

    def resolver(user_id):
        lookups.append(user_id)
        return {"7": "enterprise", "8": "free"}.get(user_id)

    broker.add_middleware(TierResolver(resolver, ttl_s=60))

    @dramatiq.actor(queue_name="tiered")
    def ocr_receipt():
        pass

    ocr_receipt.send_with_options(user_id=7)
    ocr_receipt.send_with_options(user_id=7)
    ocr_receipt.send_with_options(user_id=8, tier="pro")  # an explicit tier wins
    ocr_receipt.send_with_options(user_id=9)  # unknown user: no tier
    rows = conn.execute("SELECT user_id, tier FROM receiptq.jobs ORDER BY id").fetchall()
    assert [(r["user_id"], r["tier"]) for r in rows] == [
        ("7", "enterprise"),
        ("7", "enterprise"),
        ("8", "pro"),
        ("9", None),
    ]
    assert lookups == ["7", "9"]


def test_app_user_tier_reads_the_tier_from_the_app_users_table(broker, conn, database_url):
    from receiptq.middleware import add_app_middleware
    from receiptq.middleware.tier_resolver import app_user_tier

    user = conn.execute(
        "INSERT INTO receiptq_app.users (email, tier) VALUES ('ana@example.com', 'enterprise') RETURNING id"
    ).fetchone()["id"]
    resolve = app_user_tier(database_url)
    assert resolve(str(user)) == "enterprise"
    assert resolve("999999") is None

    add_app_middleware(broker)

    @dramatiq.actor(queue_name="tiered")
    def ocr_receipt():
        pass

    ocr_receipt.send_with_options(user_id=user)
    assert conn.execute("SELECT tier FROM receiptq.jobs").fetchone()["tier"] == "enterprise"
