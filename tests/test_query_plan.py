"""The claim is served by the partial index, never by a scan of the jobs table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from receiptq import db

QUEUES = ["ocr", "matching", "email", "default"]


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


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


def explain(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(b"EXPLAIN (FORMAT JSON) " + db.query(name).encode(), params)
        row = cur.fetchone()
    assert row is not None
    plan = row["QUERY PLAN"]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return plan[0]["Plan"]


@pytest.mark.parametrize("queue", QUEUES)
def test_claim_uses_the_partial_claim_index_and_no_seq_scan(seeded, queue):
    params = {"queue": queue, "limit": 8, "worker_id": "host:2:def", "lease_s": 30.0}
    nodes = list(plan_nodes(explain(seeded, "job_claim_batch", params)))

    claim_scans = [
        n
        for n in nodes
        if n.get("Index Name") == "jobs_claim_idx"
        and n["Node Type"] in ("Index Scan", "Index Only Scan")
    ]
    assert claim_scans, json.dumps(nodes, indent=1)
    seq_scans = [
        n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "jobs"
    ]
    assert seq_scans == [], json.dumps(nodes, indent=1)


def test_claim_on_the_seeded_table_takes_ready_rows_of_its_queue_first_priority_first(seeded):
    """The same statement, run for real on the seeded table, claims ready rows only."""
    params = {"queue": "ocr", "limit": 8, "worker_id": "host:2:def", "lease_s": 30.0}
    rows = db.fetch_all(seeded, "job_claim_batch", params)
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
