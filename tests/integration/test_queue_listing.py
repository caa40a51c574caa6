"""`receiptq status` shows which queues are paused or capped, and `receiptq queue list`
shows every queue receiptq knows of, not only those with a setting."""

from __future__ import annotations

import json
from typing import Any

from receiptq import cli, db
from tests_support import start_deliveries
from web_helpers import dead_letter, send, stats_row


def run_cli(capsys, url: str, *argv: str) -> str:
    assert cli.main([*argv, "--url", url]) == cli.EXIT_OK
    return capsys.readouterr().out


def cli_json(capsys, url: str, *argv: str) -> Any:
    return json.loads(run_cli(capsys, url, *argv, "--json"))


def test_status_shows_paused_and_capped_queues_even_without_jobs(database_url, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rows unwrapped
    run_cli(capsys, database_url, "queue", "pause", "ocr")
    run_cli(capsys, database_url, "queue", "cap", "email", "3")
    run_cli(capsys, database_url, "queue", "cap", "email", "1", "--actor", "send_email")

    queues = cli_json(capsys, database_url, "status")["queues"]
    assert sorted(queues) == ["email", "ocr"]
    assert (queues["ocr"]["paused"], queues["ocr"]["max_running"]) == (True, None)
    assert (queues["email"]["paused"], queues["email"]["max_running"]) == (False, 3)
    assert queues["email"]["actor_caps"] == {
        "send_email": {"max_running": 1, "running": 0, "reserved": 0}
    }
    assert queues["ocr"]["actor_caps"] == {}

    text = run_cli(capsys, database_url, "status")
    queues_table = text.split("Finished jobs")[0]
    rows = {line.split("│")[1].strip(): line for line in queues_table.splitlines() if "│" in line}
    assert "paused" in rows["ocr"]
    assert "cap 3, send_email cap 1" in rows["email"]


def test_queue_list_shows_every_known_queue(broker, conn, database_url, capsys):
    for queue in ("withjobs", "deadonly"):
        broker.declare_queue(queue)
    send(broker, "withjobs", "ocr_receipt")
    send(broker, "withjobs", "ocr_receipt")
    send(broker, "withjobs", "ocr_receipt")
    start_deliveries(broker, broker.claim("withjobs", 2)[0])
    send(broker, "deadonly", "ocr_receipt")
    dead_letter(broker, conn, "deadonly", "RuntimeError", "boom")
    minute = db.fetch_one(conn, "db_now")["now"].replace(second=0, microsecond=0)
    db.execute_many(conn, "stats_add", [stats_row(minute, "statsonly", "a", succeeded=1)])
    run_cli(capsys, database_url, "queue", "pause", "settingonly")

    listing = cli_json(capsys, database_url, "queue", "list")
    assert sorted(listing) == ["deadonly", "settingonly", "statsonly", "withjobs"]
    assert listing["withjobs"] == {
        "paused": False,
        "max_running": None,
        "prefetch": None,
        "running": 1,
        "reserved": 1,
        "actors": {},
    }
    assert listing["settingonly"]["paused"] is True

    text = run_cli(capsys, database_url, "queue", "list")
    for queue in listing:
        assert f"│ {queue}" in text


def test_queue_list_says_when_no_queue_is_known(database_url, capsys):
    assert cli_json(capsys, database_url, "queue", "list") == {}
    assert "no queue is known yet" in run_cli(capsys, database_url, "queue", "list")
