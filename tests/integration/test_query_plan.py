"""The claim is served by the partial index, never by a scan of the jobs table."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import receiptq.tools  # noqa: F401 (loads the tools' named queries: checked too)
from receiptq import db
from tests_support import explain, plan_nodes

QUEUES = ["ocr", "matching", "email", "default"]


@pytest.fixture
def seeded(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """20,000 jobs over four queues: 90% running, 10% queued (half ready, half scheduled)."""
    conn.execute(
        """
        INSERT INTO receiptq.jobs (message_id, queue, actor, priority, state, run_at, attempt,
                                   lease_owner, lease_expires_at, message)
        SELECT 'm-' || i,
               (ARRAY['ocr', 'matching', 'email', 'default'])[1 + i % 4],
               'actor',
               (k / 10) % 5,
               CASE WHEN k % 10 = 0 THEN 'queued' ELSE 'running' END,
               now() + CASE WHEN k % 20 = 0 THEN interval '1 hour' ELSE -interval '1 minute' END,
               CASE WHEN k % 10 = 0 THEN 0 ELSE 1 END,
               CASE WHEN k % 10 = 0 THEN NULL ELSE 'host:1:abc' END,
               CASE WHEN k % 10 = 0 THEN NULL ELSE now() + interval '30 seconds' END,
               '{}'::jsonb
        FROM generate_series(1, 20000) AS i, LATERAL (SELECT i / 4 AS k) AS per_queue
        """
    )
    conn.execute("ANALYZE receiptq.jobs")
    return conn


CLAIM = {
    "limit": 8,
    "worker_id": "host:2:def",
    "lease_s": 30.0,
    "classes": ["", "enterprise", "pro", "free"],
    "passes": [0.0, 0.0, 0.0, 0.0],
    "weights": [6.0, 6.0, 3.0, 1.0],
    "quotas": [8, 8, 8, 8],
}


def index_and_seq_scans(nodes: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    claim_scans = [
        n
        for n in nodes
        if n.get("Index Name") == "jobs_claim_idx"
        and n["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
    ]
    seq_scans = [
        n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "jobs"
    ]
    return claim_scans, seq_scans


CLAIM_STATEMENTS = ["job_claim_classes", "job_claim_plain", "job_claim_classes_later"]


@pytest.mark.parametrize("statement", CLAIM_STATEMENTS)
@pytest.mark.parametrize("queue", QUEUES)
def test_claim_statement_uses_the_partial_claim_index_and_no_seq_scan(seeded, queue, statement):
    """The claim's fast paths (one probe per class; the untiered class alone) are
    index scans."""
    params = {"queue": queue, **CLAIM}
    nodes = list(plan_nodes(explain(seeded, statement, params)))
    claim_scans, seq_scans = index_and_seq_scans(nodes)
    assert claim_scans, json.dumps(nodes, indent=1)
    assert seq_scans == [], json.dumps(nodes, indent=1)


def test_claim_over_a_large_backlog_reads_the_index_in_order_without_sorting(conn):
    """With 20,000 ready jobs the claim must stop after `limit` index entries."""
    conn.execute(
        """
        INSERT INTO receiptq.jobs (message_id, queue, actor, priority, message)
        SELECT 'b-' || i, 'ocr', 'actor', i % 3, '{}'::jsonb FROM generate_series(1, 20000) AS i
        """
    )
    conn.execute("ANALYZE receiptq.jobs")
    params = {"queue": "ocr", **CLAIM}
    nodes = [
        node
        for statement in CLAIM_STATEMENTS
        for node in plan_nodes(explain(conn, statement, params))
    ]
    sorts_or_job_scans = [
        n["Node Type"]
        for n in nodes
        if n["Node Type"] == "Sort"
        or (n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "jobs")
    ]
    assert sorts_or_job_scans == [], json.dumps(nodes, indent=1)
    assert any(
        n["Node Type"] == "Index Scan" and n.get("Index Name") == "jobs_claim_idx" for n in nodes
    ), json.dumps(nodes, indent=1)


def test_every_statement_inside_the_claim_function_uses_the_claim_index(seeded):
    """auto_explain reports the plans of the statements claim_jobs runs inside."""
    plans: list[str] = []
    try:
        seeded.execute("LOAD 'auto_explain'")
    except psycopg.Error:
        pytest.skip("auto_explain is not installed on this PostgreSQL")
    for setting in (
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_nested_statements = on",
        "auto_explain.log_format = json",
        "auto_explain.log_level = notice",
        "client_min_messages = notice",
    ):
        seeded.execute("SET " + setting)
    seeded.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
    db.fetch_all(seeded, "job_claim_batch", {"queue": "ocr", **CLAIM})
    nodes = []
    for text in plans:
        if "{" in text:  # "duration: ... plan:\n{...}"
            nodes.extend(plan_nodes(json.loads(text[text.index("{") :])["Plan"]))
    claim_scans, seq_scans = index_and_seq_scans(nodes)
    assert claim_scans, plans
    assert seq_scans == [], plans


def test_claim_on_the_seeded_table_takes_ready_rows_of_its_queue_first_priority_first(seeded):
    """The claim, run for real on the seeded table, claims ready rows only."""
    rows = db.fetch_all(seeded, "job_claim_batch", {"queue": "ocr", **CLAIM})
    assert len(rows) == 8
    assert [r["priority"] for r in rows] == [0] * 8
    ids = [r["id"] for r in rows]
    claimed = seeded.execute(
        "SELECT queue, state, lease_owner, run_at <= now() AS ready FROM receiptq.jobs"
        " WHERE id = ANY(%s)",
        (ids,),
    ).fetchall()
    assert {(r["queue"], r["state"], r["lease_owner"], r["ready"]) for r in claimed} == {
        ("ocr", "running", "host:2:def", True)
    }


def test_every_named_query_is_a_valid_psycopg_query_with_named_placeholders():
    """A stray '%' (even in a comment) breaks a query only when it runs: check them all."""
    import re

    from psycopg._queries import PostgresQuery

    for name, text in db.QUERIES.items():
        params = {p: None for p in re.findall(r"%\((\w+)\)[sbt]", text)}
        query = PostgresQuery(psycopg.adapt.Transformer())
        query.convert(text.replace("{database}", "x"), params)  # raises on a bad placeholder
        assert query.query, name


def test_claim_path_over_a_large_untiered_backlog_reads_the_claim_index_not_the_table(conn):
    """queue_claim_path runs every poll interval in each consumer: whether the queue has
    tiered jobs must be one probe of the claim index, not a scan of the untiered rows
    looking for one (250 ms per poll with a million jobs queued: the backlog bench)."""
    conn.execute(
        """
        INSERT INTO receiptq.jobs (message_id, queue, actor, message)
        SELECT 'u-' || i, 'ocr', 'actor', '{}'::jsonb FROM generate_series(1, 20000) AS i
        """
    )
    conn.execute("ANALYZE receiptq.jobs")
    nodes = list(plan_nodes(explain(conn, "queue_claim_path", {"queue": "ocr"})))
    _, seq_scans = index_and_seq_scans(nodes)
    assert seq_scans == [], json.dumps(nodes, indent=1)
    assert db.fetch_one(conn, "queue_claim_path", {"queue": "ocr"}) == {
        "restricted": False, "tiered": False, "prefetch": None, "later": False,
    }  # fmt: skip
    conn.execute(
        "INSERT INTO receiptq.jobs (message_id, queue, actor, tier, message)"
        " VALUES ('t-1', 'ocr', 'actor', 'pro', '{}')"
    )
    assert db.fetch_one(conn, "queue_claim_path", {"queue": "ocr"})["tiered"] is True


def test_a_users_last_round_is_read_from_the_user_index_even_without_statistics(conn, broker):
    """A bulk send's (and the trigger's) probe for a user's last round must use
    jobs_user_round_idx: on jobs_class_round_idx it reads every round of the class
    (a send to 1,000 users ran at 6,800 jobs/s). Never analyzed: the planner has no
    statistics, as on a table analyzed while empty."""
    from receiptq.pg.messages import job_columns
    from receiptq.tools.bench.workload import ENQUEUE_USERS, bench_messages

    broker.declare_queue("users")
    assert broker.enqueue_many(bench_messages(3000, "users", users=ENQUEUE_USERS)) == 3000
    rows = list(broker._rows(bench_messages(50, "users", users=ENQUEUE_USERS), None))
    nodes = list(plan_nodes(explain(conn, "job_enqueue_many", job_columns(rows))))
    by_index = {n.get("Index Name"): n for n in nodes if n.get("Index Name")}
    assert "jobs_user_round_idx" in by_index
    class_scans = [n for n in nodes if n.get("Index Name") == "jobs_class_round_idx"]
    assert all("user_id" not in n.get("Filter", "") for n in class_scans)
    # The trigger's probe, as a single send runs it.
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "EXPLAIN (FORMAT JSON) SELECT j.user_round FROM receiptq.jobs AS j"
            " WHERE j.queue = 'users' AND coalesce(j.tier, '') = ''"
            " AND j.user_id = 'user-7' AND j.state = 'queued' AND j.user_round > 0"
            " ORDER BY j.user_round DESC LIMIT 1"
        )
        plan = cur.fetchone()["QUERY PLAN"]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    names = {n.get("Index Name") for n in plan_nodes(plan[0]["Plan"])}
    assert names == {None, "jobs_user_round_idx"}


def test_a_bulk_sends_round_bases_read_a_class_s_first_round_once(conn, broker):
    """job_user_round_bases probes each user's last round, and its class's first round
    once per class, not once per user (inlined, the class probe ran for every user of
    the batch: 3 of its 9 ms for 1,000 users)."""
    from receiptq.tools.bench.workload import bench_messages

    broker.declare_queue("users")
    assert broker.enqueue_many(bench_messages(300, "users", users=100)) == 300
    params = {"queues": ["users"] * 100, "classes": [""] * 100}
    params["user_ids"] = [f"user-{n}" for n in range(100)]
    plan = explain(conn, "job_user_round_bases", params, "ANALYZE,")
    loops = {n.get("Index Name"): n["Actual Loops"] for n in plan_nodes(plan)}
    assert loops["jobs_user_round_idx"] == 100
    assert loops["jobs_class_round_idx"] == 1
