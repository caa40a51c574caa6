"""The receiptq command, run in-process with cli.main and as the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from dramatiq.message import Message

from receiptq import cli, db
from receiptq.cli import status as status_command
from receiptq.cli._common import parse_duration
from receiptq.cli.process import dramatiq_command
from receiptq.stats import BUCKETS

RECEIPTQ = Path(sys.executable).with_name("receiptq")
TESTS = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    """cli.main(argv) -> (exit code, stdout, stderr)."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def make_dead_letter(
    broker, conn, *, queue="mail", actor="send_email", options=None, args=(1,), kwargs=None
):
    """A job that failed for good: enqueued, claimed, dead-lettered. Returns its id."""
    broker.declare_queue(queue)
    message = Message(
        queue_name=queue, actor_name=actor, args=args, kwargs=kwargs or {}, options=options or {}
    )
    broker.enqueue(message)
    [job] = broker.claim(queue, 1)
    params = {
        "id": job.job_id,
        "attempt": job.attempt,
        "reason": "failed",
        "error_type": "SMTPError",
        "error": "mailbox unavailable",
        "traceback": "Traceback (most recent call last):\n  SMTPError: mailbox unavailable",
    }
    [row] = db.fetch_all(conn, "job_dead_letter", params)
    return row["id"]


def dead_letter_ids(conn):
    rows = db.fetch_all(conn, "dead_letter_list", {"actor": None, "queue": None, "limit": 100})
    return sorted(row["id"] for row in rows)


def unfinished(conn, queue):
    return db.fetch_one(conn, "job_count_unfinished", {"queue": queue})["jobs"]


# -- pure parsing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        (" 0s ", timedelta(0)),
    ],
)
def test_parse_duration_reads_a_number_and_a_unit(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "h", "1.5h", "-2h", "2w", "2 hours", "1h30m", "9" * 20])
def test_parse_duration_refuses_anything_else(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_dramatiq_command_runs_the_stock_cli_over_the_modules():
    command = dramatiq_command(["receiptq.actors"], ["default", "ocr"], 1, 4)
    assert command == [
        sys.executable,
        "-m",
        "dramatiq",
        "receiptq.actors",
        "--processes",
        "1",
        "--threads",
        "4",
        "--queues",
        "default",
        "ocr",
    ]
    assert "--queues" not in dramatiq_command(["m"], [], 2, 8)


# -- db migrate -----------------------------------------------------------------------


def test_db_migrate_applies_once_then_is_up_to_date(empty_database_url, capsys):
    first = run_json(capsys, "db", "migrate", "--url", empty_database_url)
    every = [name for name, _ in db.migration_files()]
    assert every[0] == "0001_queue"
    assert (first["applied"], first["up_to_date"]) == (every, False)
    assert run_json(capsys, "db", "migrate", "--url", empty_database_url)["up_to_date"]
    code, out, _ = run(capsys, "db", "migrate", "--url", empty_database_url)
    assert (code, out.splitlines()[0]) == (0, "up to date")


def test_commands_on_an_unmigrated_database_say_to_migrate(empty_database_url, capsys):
    code, _, err = run(capsys, "status", "--url", empty_database_url)
    assert code == 1
    assert "receiptq db migrate" in err


# -- status ---------------------------------------------------------------------------


def test_status_json_counts_known_contents(database_url, broker, conn, capsys):
    make_dead_letter(broker, conn, queue="mail")
    for n in (1, 2):
        run(
            capsys,
            "enqueue",
            "send_email",
            "--args",
            f"[{n}]",
            "--queue",
            "mail",
            "--url",
            database_url,
        )
    run(
        capsys,
        "enqueue",
        "send_email",
        "--args",
        "[3]",
        "--queue",
        "mail",
        "--delay-ms",
        "3600000",
        "--url",
        database_url,
    )
    minute = db.fetch_one(conn, "db_now")["now"].replace(second=0, microsecond=0)
    run_hist = [0] * BUCKETS
    run_hist[3] = 5  # five runs of 3-5 ms
    rows = [(0, 4, 1, run_hist), (3, 6, 0, []), (30, 10, 0, []), (100, 1000, 1000, [])]
    db.execute_many(
        conn,
        "stats_add",
        [
            {
                "minute": minute - timedelta(minutes=back),
                "queue": "mail",
                "actor": "send_email",
                "enqueued": 0,
                "succeeded": succeeded,
                "failed": failed,
                "retried": 0,
                "dead_lettered": 0,
                "postponed": 0,
                "run_ms_sum": 0.0,
                "run_ms_hist": hist,
                "latency_ms_sum": 0.0,
                "latency_ms_hist": [],
            }
            for back, succeeded, failed, hist in rows
        ],
    )

    snap = run_json(capsys, "--url", database_url, "status")

    # The rows sit 0, 3, 30 and 100 minutes back: each lands in the same windows even
    # if the minute turned between writing them and the status.
    generated = datetime.fromisoformat(snap["generated_at"])
    span_1m_s = (generated - generated.replace(second=0, microsecond=0)).total_seconds() + 60
    mail = snap["queues"]["mail"]
    assert 0 <= mail.pop("oldest_ready_s") < 60
    assert mail == {
        "queued": 2,
        "scheduled": 1,
        "running": 0,
        "reserved": 0,
        "dead": 1,
        "done_1m": 4,
        "done_5m": 10,
        "done_60m": 20,
        "failed_1m": 1,
        "failed_5m": 1,
        "failed_60m": 1,
        "throughput_per_s_1m": pytest.approx(4 / span_1m_s),
        "latency_p50_ms": None,
        "latency_p95_ms": None,
        "run_p50_ms": pytest.approx(4.0),
        "run_p95_ms": pytest.approx(4.9),
        "success_rate_5m": pytest.approx(10 / 11),
        "paused": False,
        "max_running": None,
        "prefetch": None,
        "actor_caps": {},
    }
    assert snap["totals"]["queued"] == 2 and snap["totals"]["done_60m"] == 20
    assert snap["workers"] == []


def test_status_prints_tables(database_url, capsys):
    run(capsys, "enqueue", "ocr_receipt", "--args", "[1]", "--url", database_url)
    code, out, _ = run(capsys, "status", "--url", database_url)
    assert code == 0
    for text in ("Queues", "ocr", "total", "Workers", "no worker has a heartbeat"):
        assert text in out


@pytest.mark.parametrize("as_json", [False, True])
def test_status_watch_redraws_until_ctrl_c(database_url, capsys, monkeypatch, as_json):
    pauses = []

    def pause(seconds):
        pauses.append(seconds)
        if len(pauses) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(status_command, "_pause", pause)
    argv = ["status", "--watch", "--interval-s", "0.25", "--url", database_url]
    code, out, _ = run(capsys, *argv, *(["--json"] if as_json else []))
    assert code == 0
    assert pauses == [0.25, 0.25]
    if as_json:
        frames = [json.loads(line) for line in out.splitlines()]
        assert len(frames) == 2 and all(frame["queues"] == {} for frame in frames)
    else:
        assert "Queues" in out


# -- dead letters ---------------------------------------------------------------------


def test_dead_letter_list_and_show(database_url, broker, conn, capsys):
    mail_id = make_dead_letter(broker, conn, queue="mail", actor="send_email")
    ocr_id = make_dead_letter(broker, conn, queue="ocr", actor="ocr_receipt")

    listed = run_json(capsys, "dead-letter", "list", "--url", database_url)
    assert [row["id"] for row in listed] == [ocr_id, mail_id]
    assert listed[1]["error_type"] == "SMTPError" and listed[1]["attempts"] == 1
    only = run_json(capsys, "dead-letter", "list", "--actor", "ocr_receipt", "--url", database_url)
    assert [row["id"] for row in only] == [ocr_id]
    by_queue = run_json(capsys, "dead-letter", "list", "--queue", "mail", "--url", database_url)
    assert [row["id"] for row in by_queue] == [mail_id]
    code, out, _ = run(capsys, "dead-letter", "list", "--url", database_url)
    assert code == 0 and "send_email" in out and "ocr_receipt" in out

    shown = run_json(capsys, "dead-letter", "show", str(mail_id), "--url", database_url)
    assert shown["traceback"].startswith("Traceback (most recent call last)")
    assert shown["message"]["args"] == [1] and shown["queue"] == "mail"
    code, out, _ = run(capsys, "dead-letter", "show", str(mail_id), "--url", database_url)
    assert code == 0 and "SMTPError: mailbox unavailable" in out


def test_dead_letter_list_shows_the_arguments_cut_to_the_width_and_json_keeps_them_whole(
    database_url, broker, conn, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "160")
    long_text = "x" * 5000
    make_dead_letter(broker, conn, args=(42, "eu"), kwargs={"lang": "de"})
    make_dead_letter(broker, conn, args=(long_text,))

    code, out, _ = run(capsys, "dead-letter", "list", "--url", database_url)
    assert code == 0 and "Arguments" in out
    assert '42, "eu", lang="de"' in out
    assert max(len(line) for line in out.splitlines()) <= 160  # cut to the terminal
    listed = run_json(capsys, "dead-letter", "list", "--url", database_url)
    assert [(row["args"], row["kwargs"]) for row in listed] == [
        ([long_text], {}),
        ([42, "eu"], {"lang": "de"}),
    ]


def test_dead_letter_show_prints_the_traceback_once(
    database_url, broker, conn, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: each text appears whole
    # BackoffRetries keeps a copy of the last traceback in the message's options.
    kept = "Traceback (most recent call last):\n  SMTPError: mailbox unavailable"
    dead_id = make_dead_letter(broker, conn, options={"traceback": kept, "retries": 2})
    code, out, _ = run(capsys, "dead-letter", "show", str(dead_id), "--url", database_url)
    assert code == 0
    assert out.count("Traceback (most recent call last)") == 1
    assert '"retries": 2' in out  # the other options are still shown
    shown = run_json(capsys, "dead-letter", "show", str(dead_id), "--url", database_url)
    assert shown["message"]["options"]["traceback"] == kept  # --json keeps everything


def test_long_bad_input_is_cut_in_the_error_message(database_url, capsys):
    malformed = "[" + "1," * 51_200  # a 100 KB list that never closes
    cases = [
        ("enqueue", "ocr_receipt", "--args", malformed),
        ("enqueue", "ocr_receipt", "--args", "[]", "--priority", "9" * 100_000 + "x"),
        ("queue", "pause", "q" * 100_000 + "!"),
    ]
    for argv in cases:
        code, out, err = run(capsys, *argv, "--url", database_url)
        assert code == 2 and out == ""
        assert len(err) < 1_000, err[:300]
        assert "chars)" in err


def test_dead_letter_show_of_an_unknown_id_fails_clearly(database_url, capsys):
    code, out, err = run(capsys, "dead-letter", "show", "424242", "--url", database_url)
    assert (code, out) == (1, "")
    assert "no dead letter with id 424242" in err


def test_dead_letter_retry_moves_the_job_back_and_removes_the_dead_letter(
    database_url, broker, conn, capsys
):
    retried = make_dead_letter(broker, conn, queue="mail", options={"retries": 3})
    kept = make_dead_letter(broker, conn, queue="ocr", actor="ocr_receipt")

    result = run_json(capsys, "dead-letter", "retry", str(retried), "--url", database_url)

    assert result == {"retried": [retried], "count": 1, "skipped": []}
    assert dead_letter_ids(conn) == [kept]
    job = conn.execute(
        "SELECT state, attempt, run_at <= now() AS due, message FROM receiptq.jobs"
    ).fetchone()
    assert job["state"] == "queued" and job["attempt"] == 0 and job["due"]
    assert "retries" not in job["message"]["options"]
    assert unfinished(conn, "mail") == 1 and unfinished(conn, "ocr") == 0


def test_dead_letter_retry_by_actor_and_all(database_url, broker, conn, capsys):
    make_dead_letter(broker, conn, queue="mail", actor="send_email")
    make_dead_letter(broker, conn, queue="ocr", actor="ocr_receipt")
    make_dead_letter(broker, conn, queue="ocr", actor="ocr_receipt")

    code, out, _ = run(
        capsys, "dead-letter", "retry", "--actor", "ocr_receipt", "--url", database_url
    )
    assert code == 0 and "moved 2 dead letter(s)" in out
    assert unfinished(conn, "ocr") == 2 and len(dead_letter_ids(conn)) == 1

    assert run_json(capsys, "dead-letter", "retry", "--all", "--url", database_url)["count"] == 1
    assert dead_letter_ids(conn) == [] and unfinished(conn, "mail") == 1


def test_dead_letter_retry_of_an_unknown_id_changes_nothing(database_url, broker, conn, capsys):
    existing = make_dead_letter(broker, conn)
    code, _, err = run(capsys, "dead-letter", "retry", str(existing), "999", "--url", database_url)
    assert code == 1 and "no dead letter with id 999" in err
    assert dead_letter_ids(conn) == [existing] and unfinished(conn, "mail") == 0


def test_dead_letter_retry_and_purge_need_a_selection(database_url, capsys):
    for command in ("retry", "purge"):
        code, _, err = run(capsys, "dead-letter", command, "--url", database_url)
        assert code == 2 and "required" in err
    code, _, err = run(capsys, "dead-letter", "purge", "1", "--all", "--url", database_url)
    assert code == 2 and "not allowed with" in err


def test_dead_letter_purge_older_than(database_url, broker, conn, capsys):
    old = make_dead_letter(broker, conn)
    recent = make_dead_letter(broker, conn)
    conn.execute(
        "UPDATE receiptq.dead_letters SET failed_at = now() - interval '3 hours' WHERE id = %s",
        [old],
    )

    result = run_json(capsys, "dead-letter", "purge", "--older-than", "2h", "--url", database_url)

    assert result == {"purged": [old], "count": 1}
    assert dead_letter_ids(conn) == [recent]


def test_dead_letter_purge_by_id_and_all(database_url, broker, conn, capsys):
    ids = [make_dead_letter(broker, conn) for _ in range(3)]
    code, out, _ = run(capsys, "dead-letter", "purge", str(ids[0]), "--url", database_url)
    assert code == 0 and "purged 1 dead letter(s)" in out
    assert run_json(capsys, "dead-letter", "purge", "--all", "--url", database_url)["count"] == 2
    assert dead_letter_ids(conn) == []


def test_dead_letter_purge_refuses_a_bad_duration_or_unknown_id(database_url, broker, conn, capsys):
    existing = make_dead_letter(broker, conn)
    code, _, err = run(
        capsys, "dead-letter", "purge", "--older-than", "2weeks", "--url", database_url
    )
    assert code == 2 and "invalid duration '2weeks'" in err
    code, _, err = run(capsys, "dead-letter", "purge", "31337", "--url", database_url)
    assert code == 1 and "no dead letter with id 31337" in err
    assert dead_letter_ids(conn) == [existing]


# -- enqueue --------------------------------------------------------------------------


def test_enqueue_stores_the_job_with_its_options(database_url, conn, capsys):
    sent = run_json(
        capsys,
        "enqueue",
        "ocr_receipt",
        "--args",
        '[42, "eu"]',
        "--kwargs",
        '{"lang": "de"}',
        "--queue",
        "ocr",
        "--priority",
        "3",
        "--tier",
        "pro",
        "--user",
        "u-7",
        "--delay-ms",
        "60000",
        "--url",
        database_url,
    )

    job = conn.execute(
        "SELECT message_id, queue, actor, priority, tier, user_id, message,"
        " run_at - enqueued_at AS delay FROM receiptq.jobs"
    ).fetchone()
    assert job["message_id"] == sent["message_id"]
    # --priority 3 plus the default tier policy's offset for "pro" (10)
    assert (job["queue"], job["actor"], job["priority"]) == ("ocr", "ocr_receipt", 13)
    assert (job["tier"], job["user_id"]) == ("pro", "u-7")
    assert job["message"]["args"] == [42, "eu"] and job["message"]["kwargs"] == {"lang": "de"}
    assert timedelta(seconds=59) < job["delay"] <= timedelta(seconds=61)


def test_enqueue_prints_the_message_id_and_sends_to_the_actors_declared_queue(
    database_url, conn, capsys
):
    code, out, err = run(capsys, "enqueue", "ocr_receipt", "--args", "[1]", "--url", database_url)
    assert (code, err) == (0, "")
    job = conn.execute("SELECT message_id, queue, priority, tier FROM receiptq.jobs").fetchone()
    assert job == {"message_id": out.strip(), "queue": "ocr", "priority": 0, "tier": None}
    stats = db.fetch_all(conn, "stats_since", {"since": datetime(2000, 1, 1).astimezone()})
    assert [(row["queue"], row["enqueued"]) for row in stats] == [("ocr", 1)]


def test_enqueue_reads_the_declared_queue_from_the_apps_module(database_url, conn, capsys):
    argv = ("enqueue", "noop", "--args", "[]", "--module", "apps.samples", "--url", database_url)
    code, _, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    assert conn.execute("SELECT queue, actor FROM receiptq.jobs").fetchall() == [
        {"queue": "bench", "actor": "noop"}
    ]


def test_enqueue_with_another_queue_than_the_declared_one_sends_there_and_warns(
    database_url, conn, capsys
):
    argv = ("enqueue", "ocr_receipt", "--args", "[1]", "--queue", "mail", "--url", database_url)
    code, _, err = run(capsys, *argv)
    assert code == 0
    assert err == (
        "receiptq: warning: actor 'ocr_receipt' is declared on queue 'ocr'; sending to 'mail' "
        "as --queue says (only workers of 'mail' will see it)\n"
    )
    assert conn.execute("SELECT queue FROM receiptq.jobs").fetchall() == [{"queue": "mail"}]


def test_enqueue_refuses_an_actor_no_module_declares_unless_forced(database_url, conn, capsys):
    code, out, err = run(capsys, "enqueue", "ocr_reciept", "--args", "[1]", "--url", database_url)
    assert (code, out) == (2, "")
    assert err.startswith(
        "receiptq: error: no actor 'ocr_reciept' in receiptq.actors (it declares:"
    )
    assert "ocr_receipt" in err and "--module" in err and "--force" in err
    assert len(err.splitlines()) == 1
    assert conn.execute("SELECT count(*)::int AS n FROM receiptq.jobs").fetchone()["n"] == 0

    argv = ("enqueue", "ocr_reciept", "--args", "[1]", "--force", "--url", database_url)
    code, _, err = run(capsys, *argv)
    assert code == 0 and err.startswith("receiptq: warning: no actor 'ocr_reciept'")
    assert conn.execute("SELECT queue, actor FROM receiptq.jobs").fetchall() == [
        {"queue": "default", "actor": "ocr_reciept"}
    ]


def test_enqueue_names_an_actor_module_that_does_not_import(database_url, conn, capsys):
    argv = ["enqueue", "sample_job", "--args", "[1]", "--module", "no_such_app.actors"]
    code, _, err = run(capsys, *argv, "--url", database_url)
    assert code == 2
    assert err.startswith(
        "receiptq: error: cannot import no_such_app.actors (ModuleNotFoundError: "
    )
    assert len(err.splitlines()) == 1
    code, _, err = run(capsys, *argv, "--queue", "q", "--force", "--url", database_url)
    assert code == 0 and "cannot import no_such_app.actors" in err and "--force" in err
    assert conn.execute("SELECT queue FROM receiptq.jobs").fetchall() == [{"queue": "q"}]


def test_the_shipped_actors_declare_only_the_receipt_and_maintenance_queues(database_url):
    # What `receiptq process` and `dramatiq receiptq.actors` consume: no sample queues.
    program = (
        "import dramatiq, receiptq.actors\n"
        "print(' '.join(sorted(dramatiq.get_broker().get_declared_queues())))"
    )
    env = {**os.environ, "RECEIPTQ_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["email", "maintenance", "matching", "ocr"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--args", "[1,"], "invalid JSON"),
        (["--args", '{"a": 1}'], "expected a JSON list"),
        (["--args", "[1]", "--kwargs", "[1]"], "expected a JSON object"),
        (["--args", "[1]", "--queue", "mail; DROP TABLE receiptq.jobs"], "invalid queue name"),
        (["--args", "[1]", "--queue", "../etc"], "invalid queue name"),
        (["--args", "[1]", "--delay-ms", "-5"], "expected a whole number >= 0"),
        (["--args", "[1]", "--tier", ""], "tier"),
        (["--args", "[1]", "--priority", "high"], "invalid int value"),
    ],
)
def test_enqueue_refuses_bad_input_and_writes_nothing(database_url, conn, capsys, extra, message):
    code, out, err = run(capsys, "enqueue", "ocr_receipt", *extra, "--url", database_url)
    assert code == 2
    assert message in err and out == ""
    assert conn.execute("SELECT count(*) AS n FROM receiptq.jobs").fetchone()["n"] == 0


def test_enqueue_refuses_a_hostile_actor_name(database_url, capsys):
    code, _, err = run(capsys, "enqueue", "x'); --", "--args", "[]", "--url", database_url)
    assert code == 2 and "invalid actor name" in err


# -- the installed console script -----------------------------------------------------


def test_console_script_migrates_and_reports_status(empty_database_url):
    def receiptq(*argv):
        return subprocess.run(
            [str(RECEIPTQ), *argv], capture_output=True, text=True, timeout=60, check=False
        )

    migrated = receiptq("db", "migrate", "--url", empty_database_url)
    every = [f"applied {name}" for name, _ in db.migration_files()]
    assert migrated.returncode == 0 and migrated.stdout.strip().splitlines()[:-1] == every
    sent = receiptq("enqueue", "ocr_receipt", "--args", "[1]", "--url", empty_database_url)
    assert sent.returncode == 0, sent.stderr
    status = receiptq("status", "--json", "--url", empty_database_url)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["queues"]["ocr"]["queued"] == 1


def test_process_burst_drains_the_queue_then_exits(database_url, conn, capsys):
    sample = ("enqueue", "sample_job", "--module", "apps.samples", "--url", database_url)
    for n in range(5):
        run(capsys, *sample, "--args", f"[{n}]")
    run(capsys, *sample, "--args", "[99]", "--delay-ms", "3600000")

    worker = subprocess.run(
        [str(RECEIPTQ), "process", "apps.samples", "--processes", "1", "--threads", "2"]
        + ["--burst", "--url", database_url],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=TESTS,  # the dramatiq CLI imports apps.samples from here
    )

    assert worker.returncode == 0, worker.stderr[-3000:]
    # The five ready jobs ran; the scheduled one waits for its time.
    assert conn.execute("SELECT count(*) AS n FROM receiptq.jobs").fetchone()["n"] == 1
    stats = db.fetch_all(conn, "stats_since", {"since": datetime(2000, 1, 1).astimezone()})
    assert sum(row["succeeded"] for row in stats) == 5
    assert "Worker process is ready for action" in worker.stderr


def test_dead_letter_retry_skips_a_message_that_is_queued_again(database_url, broker, conn, capsys):
    dead_id = make_dead_letter(broker, conn)
    [row] = db.fetch_all(conn, "dead_letter_list", {"actor": None, "queue": None, "limit": 1})
    again = Message(
        queue_name="mail",
        actor_name="send_email",
        args=(1,),
        kwargs={},
        options={},
        message_id=row["message_id"],
    )
    broker.enqueue(again)

    code, out, err = run(capsys, "dead-letter", "retry", str(dead_id), "--url", database_url)

    assert code == 1 and "moved 0 dead letter(s)" in out
    assert f"not retried (their message is queued or running again already): {dead_id}" in err
    assert dead_letter_ids(conn) == [dead_id] and unfinished(conn, "mail") == 1
