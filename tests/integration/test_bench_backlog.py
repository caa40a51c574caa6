"""The backlog workload's set-based fill writes the rows a real enqueue writes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from dramatiq.message import Message

from receiptq import db
from receiptq.pg.messages import decode_message
from receiptq.tiers import TierPolicy
from receiptq.tools.bench import backlog
from receiptq.tools.bench.workload import BENCH_ACTOR, BENCH_QUEUE, Settings, Workload

SIZE = 60  # 20 per tier: with 7 users, rounds 1..3 per user


@pytest.fixture
def workload(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workload]:
    """A Workload on the test's (migrated) database, with small side counts and chunks
    that split the fill at odd places."""
    monkeypatch.setattr(backlog, "SCHEDULED_JOBS", 30)
    monkeypatch.setattr(backlog, "DEAD_LETTERS", 5)
    monkeypatch.setattr(backlog, "FILL_CHUNK", 7)
    monkeypatch.setattr(backlog, "BACKLOG_USERS", 7)
    settings = Settings(
        workloads=("backlog",), jobs=10, seconds=1.0, processes=1, threads=2,
        timeout=60.0, database="unused", quiet=True,
    )  # fmt: skip
    w = Workload("backlog", settings, database_url, {})
    w.url = database_url
    w.conn = db.connect(database_url)
    yield w
    w.close()


def rows(conn: psycopg.Connection[Any], message_id: str | None = None) -> list[dict[str, Any]]:
    """The jobs in id order (only the one of ``message_id`` when given)."""
    return conn.execute(
        "SELECT * FROM receiptq.jobs WHERE %(id)s::text IS NULL OR message_id = %(id)s ORDER BY id",
        {"id": message_id},
    ).fetchall()


def filled(w: Workload, mode: str) -> list[dict[str, Any]]:
    broker = w.broker()
    assert backlog.fill(w, broker, SIZE, mode) > 0
    assert w.conn is not None
    return rows(w.conn)


def test_untiered_fill_counts_and_columns(workload: Workload):
    jobs = filled(workload, "untiered")
    assert workload.conn is not None
    counts = db.fetch_one(workload.conn, "bench_backlog_counts")
    assert counts == {"ready": SIZE, "scheduled": 30, "dead_letters": 5}
    assert len({j["message_id"] for j in jobs}) == SIZE + 30
    for job in jobs:
        message = decode_message(job["message"])
        assert message.message_id == job["message_id"]
        assert (message.queue_name, message.actor_name) == (BENCH_QUEUE, BENCH_ACTOR)
        assert message.args[1] == "untiered" and message.options == {}
        assert (job["tier"], job["user_id"], job["user_round"], job["priority"]) == (
            None, None, 0, 0,
        )  # fmt: skip
        assert (job["state"], job["attempt"], job["max_attempts"]) == ("queued", 0, 21)
    scheduled = [j for j in jobs if j["run_at"] > j["enqueued_at"]]
    assert len(scheduled) == 30
    assert min(j["run_at"] - j["enqueued_at"] for j in scheduled).total_seconds() >= 7200


def test_tiered_fill_matches_a_real_enqueue_and_the_round_trigger(workload: Workload):
    jobs = filled(workload, "tiered")
    conn = workload.conn
    assert conn is not None
    policy = TierPolicy.from_env()
    ready = [j for j in jobs if j["run_at"] <= j["enqueued_at"]]
    assert len(ready) == SIZE
    for tier in policy.names:
        of_tier = [j for j in ready if j["tier"] == tier]
        assert len(of_tier) == SIZE // len(policy.names)
        assert {j["priority"] for j in of_tier} == {policy.effective_priority(0, tier)}
    # Rounds: a user's n-th ready job (in id order) has round n, as the trigger gives
    # them to jobs sent one after the other; scheduled jobs have round 0.
    seen: dict[tuple[str, str], int] = {}
    for job in ready:
        key = (job["tier"], job["user_id"])
        seen[key] = seen.get(key, 0) + 1
        assert job["user_round"] == seen[key], job
        options = decode_message(job["message"]).options
        assert options == {"tier": job["tier"], "user_id": job["user_id"]}
    assert {j["user_round"] for j in jobs if j not in ready} == {0}
    assert max(seen.values()) == 3 and len(seen) == 3 * 7

    # The insert trigger is on again, and a real send of the same shape lands on the
    # round after the user's last, with the same columns as the filled rows.
    trigger = conn.execute(
        "SELECT tgenabled FROM pg_trigger WHERE tgname = 'jobs_user_round_insert'"
    ).fetchone()
    assert trigger == {"tgenabled": "O"}
    broker = workload.broker()
    message: Message[Any] = Message(
        queue_name=BENCH_QUEUE, actor_name=BENCH_ACTOR, args=(time.time(), "pro"), kwargs={},
        options={"tier": "pro", "user_id": "user-3"},
    )  # fmt: skip
    assert broker.enqueue_many([message]) == 1
    [real] = rows(conn, str(message.message_id))
    [twin] = [j for j in ready if (j["tier"], j["user_id"]) == ("pro", "user-3")][-1:]
    assert real["user_round"] == twin["user_round"] + 1
    same = ("queue", "actor", "priority", "state", "attempt", "max_attempts", "tier", "user_id")
    assert {k: real[k] for k in same} == {k: twin[k] for k in same}
    assert real["message"].keys() == twin["message"].keys()
    assert real["message"]["options"] == twin["message"]["options"]
    assert type(real["message"]["args"][0]) is type(twin["message"]["args"][0])


def test_claim_statement_params_are_the_claimers():
    policy = TierPolicy.from_env()
    name, params = backlog.claim_statement("untiered", policy, 16, 30.0)
    assert name == "job_claim_classes_later"  # the backlog has jobs not due yet
    assert (params["limit"], params["classes"], params["quotas"]) == (16, [""], [16])
    name, params = backlog.claim_statement("tiered", policy, 16, 30.0)
    assert name == "job_claim_classes_later"
    assert params["classes"] == ["", *policy.names]
    # The untiered class (idle: no job of it) gets its probe, the tiers share the rest.
    assert params["quotas"][0] == 1 and sum(params["quotas"][1:]) == 16
    assert params["quotas"][1] > params["quotas"][2] > 0
