"""`receiptq top`: the jobs running now."""

from __future__ import annotations

import json

from rich.console import Console

from receiptq import cli, monitor
from receiptq.web.top import top_view
from web_helpers import send


def test_top_json_lists_the_running_jobs(database_url, broker, capsys):
    broker.declare_queue("ocr")
    send(broker, "ocr", "ocr_receipt", args=(42, "eur"))
    send(broker, "ocr", "ocr_receipt", args=(43, "usd"))
    (job,) = broker.claim("ocr", 1)

    assert cli.main(["--url", database_url, "top", "--json"]) == cli.EXIT_OK
    snap = json.loads(capsys.readouterr().out)
    (running,) = snap["running"]
    assert running["id"] == job.job_id
    assert (running["actor"], running["queue"], running["attempt"]) == ("ocr_receipt", "ocr", 1)
    assert running["args"] == "42, 'eur'"
    assert running["worker"] == broker.worker_id
    assert 0 <= running["elapsed_s"] < 60
    assert snap["generated_at"]


def test_top_json_is_empty_when_nothing_runs(database_url, capsys):
    assert cli.main(["--url", database_url, "top", "--json"]) == cli.EXIT_OK
    assert json.loads(capsys.readouterr().out)["running"] == []


def test_top_refuses_a_bad_interval(capsys):
    assert cli.main(["top", "--interval-s", "0"]) == cli.EXIT_USAGE
    assert "expected a number > 0" in capsys.readouterr().err


def test_args_summary_is_call_like_and_shortened():
    message = {"args": [1, "a"], "kwargs": {"lang": "de"}}
    assert monitor.args_summary(message) == "1, 'a', lang='de'"
    long = monitor.args_summary({"args": ["x" * 200]}, limit=20)
    assert len(long) == 20 and long.endswith("…")
    assert monitor.args_summary(None) == ""


def render(snap) -> str:
    console = Console(record=True, width=140)
    console.print(top_view(snap))
    return console.export_text()


def test_top_view_shows_each_running_job():
    job = {"id": 7, "queue": "ocr", "actor": "ocr_receipt", "args": "42", "worker": "h:1:x",
           "elapsed_s": 12.25, "attempt": 2}  # fmt: skip
    text = render({"running": [job], "generated_at": "2026-01-01T12:00:00+00:00"})
    assert "Running jobs (1)" in text
    assert "ocr_receipt" in text and "h:1:x" in text and "12.2 s" in text


def test_top_view_says_when_nothing_runs():
    text = render({"running": [], "generated_at": "2026-01-01T12:00:00+00:00"})
    assert "nothing is running" in text
