"""`receiptq bench`: a tiny drain and a short steady run against the test server."""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from receiptq.cli import bench as bench_command
from receiptq.tools import scratch
from receiptq.tools.bench import backlog

DRAIN_KEYS = {
    "peer", "workload", "jobs", "version", "consumers", "enqueued", "enqueue_s",
    "enqueue_jobs_per_s", "done", "drain_s", "drain_jobs_per_s", "last_ack_s", "timeout",
}  # fmt: skip
STEADY_KEYS = {
    "peer", "workload", "seconds", "enqueue_batch", "version", "consumers", "enqueued",
    "enqueue_jobs_per_s", "completed", "completed_jobs_per_s", "latency_samples",
    "latency_p50_ms", "latency_p99_ms", "backlog_at_end", "timeout",
}  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    """The bench subcommand on a parser shaped like the CLI's (global --url)."""
    parser = argparse.ArgumentParser(prog="receiptq")
    parser.add_argument("--url", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    bench_command.add_parser(sub)
    return parser.parse_args(argv)


@pytest.fixture
def bench_database(pg_admin_url: str) -> Iterator[str]:
    """A unique name for the benchmark's own database, dropped afterwards."""
    name = f"receiptq_bench_t_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_drain_runs_every_job_and_reports_the_peers_keys(pg_admin_url, bench_database, capsys):
    args = parse(
        ["bench", "--url", pg_admin_url, "--database", bench_database, "--workload", "drain",
         "--jobs", "300", "--processes", "1", "--threads", "4"]
    )  # fmt: skip
    assert args.func(args) == 0
    out = capsys.readouterr().out
    [result] = json_lines(out)
    assert "error" not in result, result
    assert DRAIN_KEYS <= result.keys()
    assert result["peer"] == "receiptq"
    assert result["workload"] == "drain"
    assert result["timeout"] is False
    assert result["jobs"] == result["enqueued"] == result["done"] == 300
    assert result["drain_s"] > 0
    assert result["drain_jobs_per_s"] == pytest.approx(300 / result["drain_s"], rel=0.01)
    assert result["last_ack_s"] >= result["drain_s"]
    assert result["enqueue_jobs_per_s"] > 0
    assert result["enqueue_users_jobs_per_s"] > 0
    assert "--processes 1 --threads 4" in result["consumers"]
    assert "claim-ahead on (RECEIPTQ_CLAIM_AHEAD)" in result["consumers"]
    assert "receiptq bench" in out  # the table follows the JSON lines


def test_steady_reports_latency_and_backlog(database_url, bench_database, capsys):
    # The URL of any database on the server: bench creates its own beside it.
    args = parse(
        ["--url", database_url, "bench", "--database", bench_database, "--workload", "steady",
         "--seconds", "2", "--processes", "1", "--threads", "4", "--json"]
    )  # fmt: skip
    assert args.func(args) == 0
    out = capsys.readouterr().out
    [result] = json_lines(out)
    assert "error" not in result, result
    assert STEADY_KEYS <= result.keys()
    assert result["timeout"] is False
    assert result["enqueue_batch"] == 10
    assert result["enqueued"] > 0 and result["enqueued"] % 10 == 0
    assert result["completed"] > 0
    assert result["latency_samples"] == result["completed"]
    assert 0 <= result["latency_p50_ms"] <= result["latency_p99_ms"]
    assert result["backlog_at_end"] == max(0, result["enqueued"] - result["completed"])
    assert out.strip().count("\n") == 0  # --json: the JSON line only


def test_bench_options_are_validated():
    with pytest.raises(SystemExit):
        parse(["bench", "--workload", "drain,bogus"])
    with pytest.raises(SystemExit):
        parse(["bench", "--database", "no-dashes; drop"])
    args = parse(["bench"])
    assert args.workload == ("drain", "steady")
    assert parse(["bench", "--workload", "drain,steady,tiers"]).workload[-1] == "tiers"
    assert parse(["bench", "--workload", "ceiling"]).workload == ("ceiling",)
    assert (args.compare, args.from_json, args.plot, args.markdown) == (None, None, None, False)
    assert (args.jobs, args.seconds, args.processes, args.threads) == (20000, 15.0, 2, 8)
    assert args.database == "receiptq_bench"
    assert args.url is None


def test_recreate_database_refuses_a_bad_name(pg_admin_url):
    with pytest.raises(ValueError):
        scratch.recreate_database(pg_admin_url, 'x"; DROP DATABASE postgres; --')


TIERS_KEYS = {
    "peer", "workload", "jobs", "plain_drain_jobs_per_s", "fair_drain_jobs_per_s",
    "fairness_cost_percent", "share_under_saturation", "expected_share", "wait_p95_ms",
    "wait_p50_ms", "version", "consumers", "timeout",
}  # fmt: skip


def test_tiers_shares_the_saturated_drain_by_the_weights(pg_admin_url, bench_database, capsys):
    args = parse(
        ["bench", "--url", pg_admin_url, "--database", bench_database, "--workload", "tiers",
         "--jobs", "600", "--rounds", "2", "--processes", "1", "--threads", "4"]
    )  # fmt: skip
    assert args.func(args) == 0
    out = capsys.readouterr().out
    [result] = json_lines(out)
    assert "error" not in result, result
    assert TIERS_KEYS <= result.keys()
    assert (result["workload"], result["jobs"], result["timeout"]) == ("tiers", 600, False)
    assert result["done"] == {"enterprise": 200, "pro": 200, "free": 200}
    assert result["plain_done"] == {"0": 200, "10": 200, "20": 200}
    assert result["expected_share"] == {"enterprise": 0.6, "pro": 0.3, "free": 0.1}
    shares = result["share_under_saturation"]
    for tier, expected in result["expected_share"].items():
        assert shares[tier] == pytest.approx(expected, abs=0.08), shares
    # Plain priority order starves the lower priorities until priority 0 ran out.
    assert result["plain_share_under_saturation"]["0"] > 0.9
    # Two rounds each, reported by their medians.
    assert len(result["plain_drain_jobs_per_s_rounds"]) == 2
    fair = result["fair_drain_jobs_per_s"]
    assert fair == pytest.approx(sum(result["fair_drain_jobs_per_s_rounds"]) / 2, abs=0.1)
    # Round 1 ran plain first, round 2 fair first: the cost is the mean of the two.
    plain, fair = result["plain_drain_jobs_per_s_rounds"], result["fair_drain_jobs_per_s_rounds"]
    costs = [(p - f) / p * 100 for p, f in zip(plain, fair, strict=True)]
    assert result["fairness_cost_percent_rounds"] == pytest.approx(costs, abs=0.01)
    assert result["fairness_cost_percent"] == pytest.approx(sum(costs) / 2, abs=0.01)
    for tier in ("enterprise", "pro", "free"):
        assert 0 <= result["wait_p50_ms"][tier] <= result["wait_p95_ms"][tier]
    assert "receiptq bench: tiers" in out


def test_users_newcomers_wait_behind_the_flood_only_without_user_rounds(
    pg_admin_url, bench_database, capsys
):
    args = parse(
        ["bench", "--url", pg_admin_url, "--database", bench_database, "--workload", "users",
         "--jobs", "8000", "--processes", "1", "--threads", "4"]
    )  # fmt: skip
    assert args.func(args) == 0
    out = capsys.readouterr().out
    [result] = json_lines(out)
    assert "error" not in result, result
    assert (result["workload"], result["newcomers"], result["timeout"]) == ("users", 20, False)
    fifo_p50 = result["without_rounds_newcomer_wait_p50_ms"]
    rounds_p95 = result["with_rounds_newcomer_wait_p95_ms"]
    # FIFO: a newcomer waits for what is left of the flood; rounds: for one job per user.
    assert rounds_p95 < fifo_p50, result
    assert result["with_rounds_drain_jobs_per_s"] > 0
    assert "receiptq bench: users" in out


CEILING_KEYS = {
    "peer", "workload", "jobs", "version", "consumers", "enqueued", "enqueue_s",
    "enqueue_jobs_per_s", "done", "drain_s", "drain_jobs_per_s", "timeout",
}  # fmt: skip


def test_ceiling_drains_every_job_on_the_stub_broker_with_no_database(capsys):
    # No server answers at this URL: the ceiling runs in memory and never connects.
    args = parse(
        ["bench", "--url", "postgresql://nobody@127.0.0.1:1/none", "--workload", "ceiling",
         "--jobs", "500", "--threads", "4", "--json", "--markdown"]
    )  # fmt: skip
    assert args.func(args) == 0
    out = capsys.readouterr().out
    [result] = json_lines(out)
    assert "error" not in result, result
    assert CEILING_KEYS <= result.keys()
    assert (result["workload"], result["timeout"]) == ("ceiling", False)
    assert result["jobs"] == result["enqueued"] == result["done"] == 500
    assert result["drain_jobs_per_s"] == pytest.approx(500 / result["drain_s"], rel=0.01)
    assert result["enqueue_jobs_per_s"] > 0
    assert result["consumers"].startswith("StubBroker (in memory), 1 process x 4 threads")
    assert result["version"].startswith("dramatiq ")
    # --markdown after the run: the ceiling is a column of its own.
    assert "|  | Dramatiq StubBroker (ceiling) |" in out


BACKLOG_RUN_KEYS = {
    "fill_s", "ready", "scheduled", "dead_letters", "claim_statement", "claim_ms_p50",
    "claim_index", "claim_buffers_hit", "due_ms_p50", "due_index", "measured_jobs",
    "drain_s", "drain_jobs_per_s",
}  # fmt: skip


def test_backlog_fills_explains_and_drains_each_size_and_mode(
    pg_admin_url, bench_database, capsys, monkeypatch
):
    monkeypatch.setattr(backlog, "SCHEDULED_JOBS", 2000)  # the full counts cost seconds each
    monkeypatch.setattr(backlog, "DEAD_LETTERS", 100)
    args = parse(
        ["bench", "--url", pg_admin_url, "--database", bench_database, "--workload", "backlog",
         "--backlog-sizes", "2000,200", "--jobs", "100", "--processes", "1", "--threads", "2"]
    )  # fmt: skip
    assert args.backlog_sizes == (200, 2000)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    [result] = json_lines(out)
    assert "error" not in result, result
    assert (result["workload"], result["jobs"], result["timeout"]) == ("backlog", 100, False)
    assert result["claim_limit"] == 4  # 2 threads: Dramatiq's prefetch of 2 per thread
    assert list(result["sizes"]) == ["200", "2000"]
    for size, modes in result["sizes"].items():
        assert list(modes) == ["untiered", "tiered"]
        for mode, run in modes.items():
            assert BACKLOG_RUN_KEYS <= run.keys(), (size, mode)
            assert (run["ready"], run["scheduled"], run["dead_letters"]) == (int(size), 2000, 100)
            assert run["claim_statement"] == "job_claim_classes_later"  # jobs not due yet
            assert "jobs_claim_idx" in run["claim_index"]
            assert "jobs_claim_idx" in run["due_index"]
            assert len(run["claim_ms"]) == backlog.EXPLAIN_RUNS
            assert run["measured_jobs"] == 100 and run["drain_s"] > 0
            assert run["drain_jobs_per_s"] == pytest.approx(100 / run["drain_s"], rel=0.01)
    for mode in ("untiered", "tiered"):
        rates = [result["sizes"][s][mode]["drain_jobs_per_s"] for s in ("200", "2000")]
        assert result[f"rate_ratio_{mode}"] == pytest.approx(rates[1] / rates[0], abs=0.001)
    assert "receiptq bench: backlog" in out


def test_backlog_sizes_are_validated():
    for bad in ("", "0,10", "ten", "10,-1"):
        with pytest.raises(SystemExit):
            parse(["bench", "--backlog-sizes", bad])
    assert parse(["bench"]).backlog_sizes == (20000, 1000000)
    assert parse(["bench", "--backlog-sizes", "5,5,3"]).backlog_sizes == (3, 5)
