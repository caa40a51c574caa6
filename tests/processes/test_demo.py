"""`receiptq demo` end to end: the receipt pipeline on real worker processes, tiny N."""

from __future__ import annotations

import argparse
import json

import pytest

from receiptq import db
from receiptq.cli import demo as demo_command
from receiptq.services import receipts


def parse(argv: list[str]) -> argparse.Namespace:
    """The demo subcommand on a parser shaped like the CLI's (global --url)."""
    parser = argparse.ArgumentParser(prog="receiptq")
    parser.add_argument("--url", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    demo_command.add_parser(sub)
    return parser.parse_args(argv)


def run_demo(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict]:
    args = parse(argv)
    code = args.func(args)
    out = capsys.readouterr().out
    return code, json.loads(out.strip().splitlines()[-1])


@pytest.mark.timeout(300)  # two demos with real OCR on a loaded 2-core machine
def test_demo_processes_every_receipt_checks_the_truth_and_clears_it_for_the_next(
    database_url, conn, capsys, monkeypatch, tmp_path
):
    monkeypatch.setenv("RECEIPTQ_HOME", str(tmp_path))
    small = ["--receipts", "5", "--workers", "1", "--threads", "2", "--json", "--seed", "11",
             "--in-place"]  # fmt: skip

    code, summary = run_demo(capsys, ["demo", *small, "--fail-rate", "0", "--url", database_url])
    assert code == 0, summary
    assert summary["accounted"] is True
    assert summary["timeout"] is False
    assert summary["receipts"] == 5
    assert summary["processed"] == 5
    assert summary["jobs_left"] == 0
    assert summary["wrong"] == 0
    assert summary["matched_correctly"] == summary["expected_matched"] > 0
    assert summary["emails_delivered"] == summary["notified"] == 5 - summary["expected_failed"]
    assert summary["jobs_retried"] == 0
    assert summary["dead_letters"] == summary["expected_failed"]
    assert summary["stuck"] == 0  # the failed receipts' OCR jobs are dead letters: finished
    assert summary["statuses"]["notified"] == summary["notified"]
    assert sum(summary["statuses"].values()) == 5
    assert summary["throughput_receipts_per_s"] > 0
    assert summary["ocr_p50_ms"] is not None
    emails = db.fetch_one(conn, "email_count")["emails"]
    assert emails == summary["emails_delivered"]
    first_run = summary["run"]

    # Again on the same database, now with flaky services (URL before the subcommand):
    # the previous demo's users, receipts and dead letters are gone first.
    code, summary = run_demo(
        capsys, ["--url", database_url, "demo", *small, "--seed", "12", "--fail-rate", "0.5"]
    )
    assert code == 0, summary
    assert summary["accounted"] is True
    assert summary["receipts"] == 5
    assert summary["jobs_retried"] > 0
    # No job left: every receipt is processed, or stuck (a job of it is a dead letter).
    assert summary["processed"] + summary["stuck"] == 5
    assert len(receipts.list_receipts(conn)) == 5

    # Each run has a folder of its own: its workers' log, with no warning of a value
    # returned to nobody, and its summary.
    runs = sorted((tmp_path / "demo").iterdir())
    assert [run.name for run in runs] == sorted([first_run, summary["run"]])
    for run in runs:
        assert json.loads((run / "summary.json").read_text())["run"] == run.name
        log = (run / "workers.log").read_text()
        assert "returned a value" not in log
    assert "WARNING" not in (tmp_path / "demo" / first_run / "workers.log").read_text()


def test_demo_options_are_validated():
    with pytest.raises(SystemExit):
        parse(["demo", "--fail-rate", "1.5"])
    with pytest.raises(SystemExit):
        parse(["demo", "--receipts", "0"])
    args = parse(["demo"])
    assert (args.receipts, args.workers, args.threads, args.fail_rate) == (40, 2, 4, 0.1)
    assert args.url is None
    assert (args.in_place, args.allow_existing_data) == (False, False)
