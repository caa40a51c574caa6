"""`receiptq demo` end to end: real worker processes on a test database."""

from __future__ import annotations

import argparse
import json

import pytest

from receiptq import db, demo


def parse(argv: list[str]) -> argparse.Namespace:
    """The demo subcommand on a parser shaped like the CLI's (global --url)."""
    parser = argparse.ArgumentParser(prog="receiptq")
    parser.add_argument("--url", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    demo.add_parser(sub)
    return parser.parse_args(argv)


def run_demo(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict]:
    args = parse(argv)
    code = args.func(args)
    out = capsys.readouterr().out
    return code, json.loads(out.strip().splitlines()[-1])


def test_demo_accounts_for_every_job_then_clears_it_for_the_next(database_url, conn, capsys):
    small = ["--jobs", "200", "--workers", "1", "--threads", "4", "--json", "--seed", "7"]

    # Failures: some runs fail and are retried (max 3 retries), a few may die.
    code, summary = run_demo(capsys, ["demo", *small, "--fail-rate", "0.3", "--url", database_url])
    assert code == 0, summary
    assert summary["accounted"] is True
    assert summary["timeout"] is False
    assert summary["enqueued"] == 200
    assert summary["done"] + summary["dead"] == 200
    assert summary["left"] == 0
    assert summary["retried"] > 0
    assert summary["failed_runs"] == summary["retried"] + summary["dead"]
    assert summary["throughput_jobs_per_s"] > 0
    assert summary["latency_p50_ms"] is not None
    letters = db.fetch_all(
        conn, "dead_letter_list", {"actor": "sample_job", "queue": "default", "limit": None}
    )
    assert len(letters) == summary["dead"]
    assert all(letter["attempts"] == 4 for letter in letters)  # 1 run + 3 retries
    assert db.fetch_one(conn, "job_count_unfinished", {"queue": "default"})["jobs"] == 0

    # No failures, same database (URL before the subcommand, as `receiptq --url U demo`):
    # the previous demo's dead letters are cleared and its statistics not counted.
    code, summary = run_demo(capsys, ["--url", database_url, "demo", *small, "--fail-rate", "0"])
    assert code == 0, summary
    assert summary["done"] == 200
    assert summary["dead"] == 0
    assert summary["retried"] == 0
    assert summary["failed_runs"] == 0
    assert (
        db.fetch_all(conn, "dead_letter_list", {"actor": "sample_job", "queue": None, "limit": 10})
        == []
    )


def test_demo_options_are_validated():
    with pytest.raises(SystemExit):
        parse(["demo", "--fail-rate", "1.5"])
    with pytest.raises(SystemExit):
        parse(["demo", "--jobs", "0"])
    args = parse(["demo"])
    assert (args.jobs, args.workers, args.threads, args.fail_rate) == (3000, 2, 8, 0.05)
    assert args.url is None
