"""`receiptq top`: the jobs running now."""

from __future__ import annotations

import json
import time

from rich.console import Console

from receiptq import claimed_jobs, cli
from receiptq.cli.status_views import top_view
from tests_support import start_deliveries
from web_helpers import send


def test_top_json_lists_started_jobs_as_running_from_their_start_and_the_rest_as_reserved(
    database_url, broker, capsys
):
    broker.declare_queue("ocr")
    for receipt in (42, 43, 44):
        send(broker, "ocr", "ocr_receipt", args=(receipt, "eur"))
    first, second, waiting = broker.claim("ocr", 3)
    start_deliveries(broker, first)
    time.sleep(0.5)  # not a wait for a condition: the two starts are half a second apart
    start_deliveries(broker, second)

    assert cli.main(["--url", database_url, "top", "--json"]) == cli.EXIT_OK
    snap = json.loads(capsys.readouterr().out)
    assert snap["counts"] == {"running": 2, "reserved": 1}
    assert [job["id"] for job in snap["running"]] == [first.job_id, second.job_id]
    longest, latest = snap["running"]
    assert (longest["actor"], longest["queue"], longest["attempt"]) == ("ocr_receipt", "ocr", 1)
    assert longest["args"] == "42, 'eur'"
    assert longest["worker"] == broker.worker_id
    # Elapsed counts from each job's own start, not from the claim they shared.
    assert 0.4 <= longest["elapsed_s"] - latest["elapsed_s"] < 30
    assert longest["started_at"] < latest["started_at"]
    assert longest["claimed_at"] == latest["claimed_at"] <= longest["started_at"]
    (reserved,) = snap["reserved"]
    assert (reserved["id"], reserved["started_at"]) == (waiting.job_id, None)
    assert reserved["worker"] == broker.worker_id and reserved["args"] == "44, 'eur'"
    assert snap["generated_at"]


def test_top_json_is_empty_when_nothing_is_claimed(database_url, capsys):
    assert cli.main(["--url", database_url, "top", "--json"]) == cli.EXIT_OK
    snap = json.loads(capsys.readouterr().out)
    assert (snap["running"], snap["reserved"]) == ([], [])
    assert snap["counts"] == {"running": 0, "reserved": 0}


def test_top_refuses_a_bad_interval(capsys):
    assert cli.main(["top", "--interval-s", "0"]) == cli.EXIT_USAGE
    assert "expected a number > 0" in capsys.readouterr().err


def test_args_summary_is_call_like_and_shortened():
    message = {"args": [1, "a"], "kwargs": {"lang": "de"}}
    assert claimed_jobs.args_summary(message) == "1, 'a', lang='de'"
    long = claimed_jobs.args_summary({"args": ["x" * 200]}, limit=20)
    assert len(long) == 20 and long.endswith("…")
    assert claimed_jobs.args_summary(None) == ""


def render(snap) -> str:
    console = Console(record=True, width=140)
    console.print(top_view(snap))
    return console.export_text()


JOB = {"id": 7, "queue": "ocr", "actor": "ocr_receipt", "args": "42", "worker": "h:1:x",
       "elapsed_s": 12.25, "attempt": 2}  # fmt: skip
STAMP = "2026-01-01T12:00:00+00:00"


def test_top_view_shows_each_running_job_and_the_reserved_apart():
    reserved = {**JOB, "id": 8, "actor": "send_email", "elapsed_s": 3.5}
    snap = {"running": [JOB], "reserved": [reserved], "counts": {"running": 1, "reserved": 4},
            "generated_at": STAMP}  # fmt: skip
    text = render(snap)
    assert "Running jobs (1)" in text
    assert "ocr_receipt" in text and "h:1:x" in text and "12.2 s" in text
    assert "Reserved: claimed by a worker, not started (1 of 4)" in text
    assert "send_email" in text and "3.5 s" in text


def test_top_view_says_when_nothing_runs():
    snap = {"running": [], "reserved": [], "counts": {"running": 0, "reserved": 0},
            "generated_at": STAMP}  # fmt: skip
    text = render(snap)
    assert "nothing is running" in text and "Reserved" not in text
