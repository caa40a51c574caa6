"""Unit tests of receiptq.tools.bench.compare: which figures are set side by side, the
ratios and the markdown table, reading result files."""

from __future__ import annotations

import json

import pytest

from receiptq.tools.bench import plot
from receiptq.tools.bench.compare import (
    ResultsFileError,
    fell_behind,
    load_lines,
    markdown_table,
    peer_figures,
    postgres_version,
    ratio,
)

RECEIPTQ_DRAIN = {
    "peer": "receiptq", "workload": "drain", "jobs": 5000, "enqueue_jobs_per_s": 40000.0,
    "drain_jobs_per_s": 6000.0, "done": 5000, "consumers": "2 x 8",
    "version": "receiptq 0.1.0, dramatiq 2.2.1, psycopg 3.3.9, PostgreSQL 16.4",
}  # fmt: skip
RECEIPTQ_STEADY = {
    "peer": "receiptq", "workload": "steady", "completed_jobs_per_s": 1500.0, "enqueued": 7600,
    "latency_p50_ms": 5.0, "latency_p99_ms": 30.0, "backlog_at_end": 10,
}  # fmt: skip
PEER_DRAIN = {
    "peer": "pgqueuer-asyncpg", "workload": "drain", "enqueue_jobs_per_s": 32000.0,
    "drain_jobs_per_s": 4000.0, "consumers": "5 consumers", "version": "pgqueuer 1.6.0",
}  # fmt: skip
PEER_STEADY = {
    "peer": "pgqueuer-asyncpg", "workload": "steady", "completed_jobs_per_s": 1519.0,
    "enqueued": 7620, "latency_p50_ms": 10.0, "latency_p99_ms": 120.0, "backlog_at_end": 20,
}  # fmt: skip
REDIS_STEADY = {
    "peer": "dramatiq-redis", "workload": "steady", "completed_jobs_per_s": 2300.0,
    "enqueued": 15280, "latency_p50_ms": 900.0, "latency_p99_ms": 1600.0,
    "backlog_at_end": 3686,
}  # fmt: skip
CEILING = {
    "peer": "receiptq", "workload": "ceiling", "drain_jobs_per_s": 12000.0,
    "enqueue_jobs_per_s": 50000.0, "done": 5000, "consumers": "StubBroker",
}  # fmt: skip
RESULTS = [RECEIPTQ_DRAIN, RECEIPTQ_STEADY, CEILING, PEER_DRAIN, PEER_STEADY, REDIS_STEADY]


def test_ratio_is_receiptq_over_the_peer_and_none_without_both():
    assert ratio(6000, 4000) == 1.5
    assert ratio(5, 10) == 0.5
    assert ratio(None, 10) is None
    assert ratio(5, None) is None
    assert ratio(5, 0) is None


@pytest.mark.parametrize(
    ("backlog", "enqueued", "behind"),
    [
        (None, None, False),
        (0, 1000, False),
        (100, 1000, False),  # at least FELL_BEHIND_MIN_JOBS
        (101, 1000, True),
        (500, 10_000, False),  # at most 5 % of what was enqueued
        (501, 10_000, True),
        (3686, 15280, True),
    ],
)
def test_a_steady_run_fell_behind_when_its_backlog_outgrew_the_threshold(backlog, enqueued, behind):
    assert fell_behind(backlog, enqueued) is behind


def test_peer_figures_put_receiptq_first_and_take_each_peers_last_good_line():
    failed = {"peer": "receiptq", "workload": "drain", "error": "boom"}
    rerun = {**PEER_DRAIN, "drain_jobs_per_s": 4100.0}
    figures = peer_figures([PEER_DRAIN, *RESULTS, rerun, failed])
    assert [f.peer for f in figures] == ["receiptq", "pgqueuer-asyncpg", "dramatiq-redis"]
    own, pgq, redis = figures
    assert (own.drain_jobs_per_s, own.latency_p50_ms) == (6000.0, 5.0)
    assert pgq.drain_jobs_per_s == 4100.0
    assert redis.drain_jobs_per_s is None and redis.latency_p99_ms == 1600.0
    assert [f.fell_behind for f in figures] == [False, False, True]


def test_the_markdown_table_sets_the_peers_side_by_side_with_ratios():
    table = markdown_table(RESULTS)
    rows = table.splitlines()
    assert rows[0] == (
        "|  | receiptq | pgqueuer-asyncpg | dramatiq-redis | Dramatiq StubBroker (ceiling) |"
    )
    assert rows[1] == "| --- | --- | --- | --- | --- |"
    assert rows[2] == "| drain jobs/s | 6,000 | 4,000 (1.50×) | – | 12,000 (0.50×) |"
    assert rows[3] == "| enqueue jobs/s (drain) | 40,000 | 32,000 (1.25×) | – | 50,000 (0.80×) |"
    assert rows[4] == "| steady jobs/s | 1,500 | 1,519 | 2,300 | – |"
    assert rows[5] == "| steady p50 ms | 5.0 | 10.0 (0.50×) | 900 (0.0056×) | – |"
    assert rows[6] == "| steady p99 ms | 30.0 | 120 (0.25×) | 1,600 (0.019×) | – |"
    assert rows[7] == "| steady backlog at end | 10 | 20 | 3,686 | – |"
    assert "Fell behind in the steady run (backlog > 5% of what was enqueued): dramatiq-redis" in (
        table
    )
    assert "- pgqueuer-asyncpg (pgqueuer 1.6.0): 5 consumers" in table
    assert "- Dramatiq StubBroker (ceiling) (?): StubBroker" in table


def test_the_bulk_send_with_users_is_a_row_only_when_measured():
    assert "user_id" not in markdown_table(RESULTS)  # older lines: no such figure
    drain = {**RECEIPTQ_DRAIN, "enqueue_users_jobs_per_s": 30000.0}
    rows = markdown_table([drain if r is RECEIPTQ_DRAIN else r for r in RESULTS]).splitlines()
    assert rows[4] == "| enqueue jobs/s, a user_id on each | 30,000 | – | – | – |"


def test_postgres_version_comes_from_the_line_that_names_it():
    assert postgres_version(RESULTS) == "PostgreSQL 16.4"
    assert postgres_version([PEER_DRAIN]) is None


def test_load_lines_skips_the_table_after_the_json_lines(tmp_path):
    path = tmp_path / "rq.jsonl"
    path.write_text(json.dumps(RECEIPTQ_DRAIN) + "\n\n┏━━ receiptq bench ━━┓\n")
    assert load_lines(path, "--from-json") == [RECEIPTQ_DRAIN]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "--from-json {path}: no such file"),
        ("", "--from-json {path}: no result lines (expected JSON lines"),
        ("just text\n", "--from-json {path}: no result lines"),
        ('{"peer": "receiptq", "workload"\n', "--from-json {path}, line 1: not JSON ("),
        (
            '{"peer": "x", "workload": "drain"}\n[1]\n{"peer": 1}\n',
            "--from-json {path}, line 3: a result line is",
        ),
        (b"\xff\xfe{", "--from-json {path}: cannot read it ("),
    ],
)
def test_a_missing_or_garbled_results_file_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "rq.jsonl"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    with pytest.raises(ResultsFileError) as raised:
        load_lines(path, "--from-json")
    assert str(raised.value).startswith(message.format(path=path))
    assert "\n" not in str(raised.value)


def test_the_optional_panels_appear_only_with_their_lines():
    assert len(plot.panels(RESULTS)) == 3
    tiers = {"peer": "receiptq", "workload": "tiers", "plain_drain_jobs_per_s": 5000.0}
    assert len(plot.panels([*RESULTS, tiers])) == 4
    backlog = {"peer": "receiptq", "workload": "backlog", "sizes": {}}
    assert len(plot.panels([*RESULTS, backlog])) == 3  # no rates: no panel
    backlog["sizes"] = {"20000": {"untiered": {"drain_jobs_per_s": 5000.0}}}
    assert len(plot.panels([*RESULTS, backlog])) == 4


def test_backlog_rates_read_sizes_as_numbers_per_mode():
    # The backlog workload's line: {size: {mode: figures}}; a timed-out run lacks a rate.
    line = {
        "sizes": {
            "20000": {"untiered": {"drain_jobs_per_s": 5000}, "tiered": {"fill_s": 3.0}},
            "1000000": {"untiered": {"drain_jobs_per_s": 4500.5}},
        },
        "x": 3,
    }
    assert plot.backlog_rates(line) == {"untiered": {20000: 5000.0, 1_000_000: 4500.5}}
    assert plot.backlog_rates({}) == {}


def test_the_title_names_the_day_the_cpu_and_postgresql(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD   EPYC 7B13\n")
    assert plot.cpu_model(cpuinfo) == "AMD EPYC 7B13"
    assert plot.cpu_model(tmp_path / "absent") is None
    monkeypatch.setattr(plot, "cpu_model", lambda: "AMD EPYC 7B13")
    monkeypatch.setattr(plot.os, "cpu_count", lambda: 2)
    import datetime

    heading = plot.title(RESULTS, datetime.date(2026, 12, 2))
    assert heading == (
        "receiptq bench against its peers, 2026-12-02\nAMD EPYC 7B13, 2 cores, PostgreSQL 16.4"
    )
