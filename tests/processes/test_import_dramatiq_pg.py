"""`receiptq import dramatiq-pg`: dramatiq-pg's messages come over to receiptq, none lost.

The source table is made by dramatiq-pg 0.12.0's own schema.sql (vendored, with its
licence, in tests/fixtures/dramatiq_pg/). Its rows are rows dramatiq-pg itself wrote
(recorded_rows.json: tools/dramatiq_pg/record_rows.py ran dramatiq-pg on Dramatiq
1.18 with real workers, in a separate virtual environment, and dumped its table),
or rows that ``dramatiq_pg_support.sent`` builds in the same format, which
``test_rows_built_here_have_the_shape_of_the_rows_dramatiq_pg_wrote`` checks against
the recorded ones. With RECEIPTQ_TEST_DRAMATIQ_PG_PYTHON set to the Python of such
an environment, one more test has dramatiq-pg write its rows on the spot.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dramatiq_pg_support import RawJson, create_table, insert_rows, recorded_rows, sent
from receiptq import cli
from receiptq.import_dramatiq_pg import (
    IMPORT_REASON,
    ImportOptions,
    Plan,
    Skip,
    Source,
    SourceRow,
    error_of,
    plan,
    run_import,
)
from tests_support import start_dramatiq, stop, wait_until

TOOLS = Path(__file__).resolve().parents[2] / "tools" / "dramatiq_pg"


def run_cli(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, Any]:
    """`receiptq import dramatiq-pg --json ...`: its exit code and its JSON summary."""
    code = cli.main(["import", "dramatiq-pg", "--url", url, "--json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out) if out else None


def jobs(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    rows = conn.execute("SELECT * FROM receiptq.jobs").fetchall()
    return {r["message_id"]: r for r in rows}


def dead_letters(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    rows = conn.execute("SELECT * FROM receiptq.dead_letters").fetchall()
    return {r["message_id"]: r for r in rows}


def source_ids(conn: psycopg.Connection[Any], table: str = "dramatiq.queue") -> dict[str, str]:
    rows = conn.execute(f"SELECT message_id::text AS id, state::text FROM {table}").fetchall()  # noqa: S608
    return {r["id"]: r["state"] for r in rows}


def ids_in(rows: list[dict[str, Any]], *states: str) -> set[str]:
    return {r["message_id"] for r in rows if r["state"] in states}


def eta_of(row: dict[str, Any]) -> datetime | None:
    eta = row["message"]["options"].get("eta")
    return None if eta is None else datetime.fromtimestamp(eta / 1000, tz=UTC)


@pytest.fixture
def recorded(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """dramatiq-pg's table holding the rows dramatiq-pg wrote."""
    create_table(conn)
    rows = recorded_rows()
    insert_rows(conn, rows)
    return rows


# -- what each row becomes ------------------------------------------------------------


def test_every_pending_message_becomes_one_job_with_its_id_queue_actor_and_arguments(
    database_url, conn, recorded, capsys
):
    code, report = run_cli(capsys, database_url)

    assert code == 0
    imported = jobs(conn)
    assert set(imported) == ids_in(recorded, "queued", "consumed")
    for row in recorded:
        job = imported.get(row["message_id"])
        if job is None:
            continue
        sent_message = row["message"]
        assert job["queue"] == sent_message["queue_name"].removesuffix(".DQ")
        assert job["actor"] == sent_message["actor_name"]
        assert job["message"]["queue_name"] == job["queue"]
        assert job["message"]["message_id"] == row["message_id"]
        assert job["message"]["args"] == sent_message["args"]
        assert job["message"]["kwargs"] == sent_message["kwargs"]
        assert job["priority"] == sent_message["options"].get("priority", 0)
        assert job["state"] == "queued"
    assert report["totals"]["jobs"] == len(imported) == 6
    assert {r["actor"] for r in imported.values()} == {"read_receipt", "flaky", "send_email"}
    assert report["actors"]["read_receipt"] == {"jobs": 3}


def test_delayed_messages_keep_their_due_time_from_eta(database_url, conn, recorded, capsys):
    create_table(conn, "later")
    in_an_hour = sent("read_receipt", 10, delay_ms=3_600_000)
    insert_rows(conn, [in_an_hour], "later")

    run_cli(capsys, database_url)
    run_cli(capsys, database_url, "--from-schema", "later")

    imported = jobs(conn)
    delayed = [r for r in [*recorded, in_an_hour] if eta_of(r) is not None]
    assert len(delayed) == 4  # a retry waiting, two ten-year delays (one held), one hour
    for row in delayed:
        job = imported[row["message_id"]]
        assert job["run_at"] == eta_of(row)
        assert "eta" not in job["message"]["options"]
    assert imported[in_an_hour["message_id"]]["run_at"] > datetime.now(UTC)
    still_ahead = [r for r in delayed if imported[r["message_id"]]["run_at"] > datetime.now(UTC)]
    assert len(still_ahead) >= 3  # the hour and the two ten-year delays


def test_messages_due_now_keep_their_order_and_retries_keep_their_count(
    database_url, conn, recorded, capsys
):
    run_cli(capsys, database_url)

    imported = jobs(conn)
    for row in recorded:
        job = imported.get(row["message_id"])
        if job is not None and eta_of(row) is None:  # due now: run_at is when it was sent
            sent_at = datetime.fromtimestamp(row["message"]["message_timestamp"] / 1000, tz=UTC)
            assert job["run_at"] == sent_at
        if job is not None:
            assert job["attempt"] == row["message"]["options"].get("retries", 0)
    flaky = next(j for j in imported.values() if j["actor"] == "flaky")
    assert flaky["attempt"] == 1 and flaky["max_attempts"] == 21


def test_rejected_messages_become_dead_letters_imported_from_dramatiq_pg(
    database_url, conn, recorded, capsys
):
    code, report = run_cli(capsys, database_url)

    dead = dead_letters(conn)
    assert set(dead) == ids_in(recorded, "rejected")
    assert {d["reason"] for d in dead.values()} == {IMPORT_REASON}
    broken = next(d for d in dead.values() if d["actor"] == "broken")
    assert (broken["error_type"], broken["error"]) == ("ValueError", "receipt 2 is unreadable")
    assert broken["traceback"].rstrip().endswith("ValueError: receipt 2 is unreadable")
    assert broken["attempts"] == 1 and broken["queue"] == "receipts"
    source = {r["message_id"]: r for r in recorded}
    assert broken["failed_at"] == datetime.fromisoformat(source[broken["message_id"]]["mtime"])
    retired = next(d for d in dead.values() if d["actor"] == "retired_actor")
    assert retired["traceback"] is None and retired["attempts"] == 1
    assert report["totals"]["dead_letters"] == 2
    assert report["actors"]["retired_actor"] == {"dead_letters": 1}


def test_done_rows_are_left_alone_and_nothing_is_deleted_without_move(
    database_url, conn, recorded, capsys
):
    before = source_ids(conn)

    code, report = run_cli(capsys, database_url)

    assert source_ids(conn) == before
    done = ids_in(recorded, "done")
    assert len(done) == 1 and not done & (set(jobs(conn)) | set(dead_letters(conn)))
    assert report["queues"]["receipts"]["done"] == 1


def test_a_consumed_message_is_queued_again_and_counted_as_possibly_run(
    database_url, conn, recorded, capsys
):
    held = next(r for r in recorded if r["state"] == "consumed" and r["queue_name"] == "emails")
    waiting = next(r for r in recorded if r["state"] == "consumed" and r["queue_name"] != "emails")

    code, report = run_cli(capsys, database_url)

    assert code == 0
    assert jobs(conn)[held["message_id"]]["run_at"] <= datetime.now(UTC)
    # held by a worker only to wait for its eta: it never ran, so it is scheduled, not requeued
    assert jobs(conn)[waiting["message_id"]]["run_at"] == eta_of(waiting)
    emails = report["queues"]["emails"]
    assert (emails["jobs"], emails["scheduled"], emails["requeued"]) == (2, 1, 1)


def test_the_summary_says_that_consumed_messages_may_run_twice(
    database_url, conn, recorded, capsys
):
    code = cli.main(["import", "dramatiq-pg", "--url", database_url])

    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "1 message(s) were being processed when dramatiq-pg stopped" in out
    assert "may run a second time" in out and "at-least-once" in out
    assert "read_receipt" in out and "retired_actor" in out  # the per-actor table


# -- running it again, moving, dry runs ------------------------------------------------


def test_a_second_import_adds_nothing_even_after_the_jobs_ran(database_url, conn, recorded, capsys):
    run_cli(capsys, database_url)
    first_jobs, first_dead = jobs(conn), dead_letters(conn)
    conn.execute("DELETE FROM receiptq.jobs WHERE run_at <= now()")  # as if they ran

    code, report = run_cli(capsys, database_url)

    assert code == 0
    assert report["totals"]["jobs"] == report["totals"]["dead_letters"] == 0
    assert report["totals"]["already_present"] == 8
    assert set(jobs(conn)) < set(first_jobs)
    assert set(dead_letters(conn)) == set(first_dead)


def test_move_deletes_the_imported_rows_from_dramatiq_pg_and_keeps_done_ones(
    database_url, conn, recorded, capsys
):
    code, report = run_cli(capsys, database_url, "--move")

    assert code == 0
    assert source_ids(conn) == {r["message_id"]: "done" for r in recorded if r["state"] == "done"}
    assert report["totals"]["moved"] == 8
    assert set(jobs(conn)) | set(dead_letters(conn)) == ids_in(
        recorded, "queued", "consumed", "rejected"
    )
    later = sent("read_receipt", 11)
    insert_rows(conn, [later])
    code, report = run_cli(capsys, database_url, "--move")
    assert (report["totals"]["jobs"], report["totals"]["moved"]) == (1, 1)
    assert later["message_id"] in jobs(conn)


def test_a_failing_batch_changes_neither_table_and_a_rerun_completes_it(database_url, conn):
    create_table(conn)
    rows = [sent("read_receipt", n) for n in range(30)]
    insert_rows(conn, rows)
    poisoned = sorted(r["message_id"] for r in rows)[14]  # in the second batch of 10
    conn.execute(
        f"""
        CREATE FUNCTION fail_one() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.message_id = '{poisoned}' THEN RAISE EXCEPTION 'disk full'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER fail_one BEFORE INSERT ON receiptq.imported_messages
            FOR EACH ROW EXECUTE FUNCTION fail_one();
        """
    )
    options = ImportOptions(move=True, batch_size=10)

    with pytest.raises(psycopg.errors.RaiseException):
        run_import(conn, Source(), options)

    first_batch = set(sorted(r["message_id"] for r in rows)[:10])
    assert set(jobs(conn)) == first_batch
    assert set(source_ids(conn)) == {r["message_id"] for r in rows} - first_batch
    conn.execute("DROP TRIGGER fail_one ON receiptq.imported_messages")
    report = run_import(conn, Source(), options)
    assert report.totals.jobs == 20 and report.totals.moved == 20
    assert set(jobs(conn)) == {r["message_id"] for r in rows} and not source_ids(conn)


def test_a_dry_run_reports_the_same_summary_and_writes_nothing(
    database_url, conn, recorded, capsys
):
    before = source_ids(conn)

    code, dry = run_cli(capsys, database_url, "--dry-run", "--move")

    assert code == 0 and dry["dry_run"] is True
    assert not jobs(conn) and not dead_letters(conn) and source_ids(conn) == before
    assert conn.execute("SELECT count(*) AS n FROM receiptq.imported_messages").fetchone()["n"] == 0
    code, real = run_cli(capsys, database_url, "--move")
    assert {k: v for k, v in dry.items() if k != "dry_run"} == {
        k: v for k, v in real.items() if k != "dry_run"
    }


def test_many_rows_import_in_batches_each_message_once(database_url, conn):
    create_table(conn)
    states = ("queued", "consumed", "rejected", "done")
    rows = [sent("read_receipt", n, state=states[n % 4]) for n in range(1250)]
    rows += [sent("send_email", n, queue="emails", delay_ms=60_000) for n in range(250)]
    insert_rows(conn, rows)

    code = cli.main(["import", "dramatiq-pg", "--url", database_url, "--batch-size", "100"])

    assert code == 0
    counted = conn.execute(
        "SELECT (SELECT count(*) FROM receiptq.jobs) AS jobs,"
        " (SELECT count(DISTINCT message_id) FROM receiptq.jobs) AS distinct_jobs,"
        " (SELECT count(*) FROM receiptq.dead_letters) AS dead,"
        " (SELECT count(*) FROM receiptq.jobs WHERE run_at > now()) AS scheduled"
    ).fetchone()
    assert counted == {"jobs": 876, "distinct_jobs": 876, "dead": 312, "scheduled": 250}


# -- bad input ---------------------------------------------------------------------------


def _bad_rows() -> dict[str, dict[str, Any]]:
    """Rows that break one of receiptq's enqueue rules each, by what the report says."""
    not_an_object = sent("read_receipt", 1)
    not_an_object["message"] = RawJson('"read receipt 1"')
    missing = sent("read_receipt", 2)
    del missing["message"]["actor_name"]
    bad_queue = sent("read_receipt", 3, queue="receipts for ana")
    too_big = sent("read_receipt", "x" * 5000)
    tier = sent("read_receipt", 4, options={"tier": "platinum"})
    other_id = sent("read_receipt", 5)
    other_id["message"]["message_id"] = "a-different-id"
    no_message = sent("read_receipt", 6)
    no_message["message"] = None
    no_state = sent("read_receipt", 7, state=None)  # type: ignore[arg-type]
    return {
        "undecodable": not_an_object,
        "actor_name": missing,
        "invalid queue name": bad_queue,
        "over the limit": too_big,
        "platinum": tier,
        "is not the row's": other_id,
        "no message": no_message,
        "state None": no_state,
    }


def test_bad_rows_are_reported_left_in_place_and_do_not_stop_the_import(
    database_url, conn, capsys, monkeypatch
):
    monkeypatch.setenv("RECEIPTQ_MAX_MESSAGE_BYTES", "2000")
    create_table(conn)
    bad = _bad_rows()
    good = [sent("read_receipt", 100), sent("read_receipt", 101)]
    insert_rows(conn, [good[0], *bad.values(), good[1]])

    code, report = run_cli(capsys, database_url, "--move")

    assert code == 1  # something needs a look
    assert set(jobs(conn)) == {r["message_id"] for r in good}
    reasons = {row["message_id"]: row["reason"] for row in report["skipped"]}
    for why, row in bad.items():
        assert why in reasons[row["message_id"]], (why, reasons[row["message_id"]])
    assert set(source_ids(conn)) == {r["message_id"] for r in bad.values()}  # not moved
    assert report["totals"]["skipped"] == len(bad)
    capsys.readouterr()
    code = cli.main(["import", "dramatiq-pg", "--url", database_url])
    out = capsys.readouterr().out
    assert code == 1 and f"skipped {len(bad)} row(s)" in out and "platinum" in out


def test_a_schema_name_that_is_not_an_identifier_is_refused_in_one_line(database_url, capsys):
    injection = 'dramatiq"; DROP TABLE receiptq.jobs; --'
    code = cli.main(["import", "dramatiq-pg", "--url", database_url, "--from-schema", injection])

    err = capsys.readouterr().err
    assert code == 2
    assert "invalid schema name" in err and "Traceback" not in err


def test_a_missing_dramatiq_pg_table_is_one_clear_line(database_url, capsys):
    code = cli.main(["import", "dramatiq-pg", "--url", database_url])

    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == [
        "receiptq: error: no dramatiq-pg table dramatiq.queue in this database: pass "
        "--from-schema (and --from-prefix) as given to dramatiq-pg's broker, or --url for "
        "its database"
    ]


def test_a_table_in_another_schema_with_a_prefix_is_found_by_from_schema_and_prefix(
    database_url, conn, capsys
):
    create_table(conn, "legacy_jobs", "app_")
    row = sent("read_receipt", 1)
    insert_rows(conn, [row], "legacy_jobs", "app_")

    code = cli.main(
        ["import", "dramatiq-pg", "--url", database_url, "--from-schema", "legacy_jobs"]
    )
    assert code == 1 and "no dramatiq-pg table legacy_jobs.queue" in capsys.readouterr().err

    code, report = run_cli(
        capsys, database_url, "--from-schema", "legacy_jobs", "--from-prefix", "app_", "--move"
    )
    assert code == 0 and report["source"] == "legacy_jobs.app_queue"
    assert set(jobs(conn)) == {row["message_id"]}
    assert not source_ids(conn, "legacy_jobs.app_queue")


def test_open_dramatiq_pg_connections_are_warned_about(database_url, conn, recorded, capsys):
    with psycopg.connect(database_url, application_name="dramatiq-pg"):
        code = cli.main(["import", "dramatiq-pg", "--url", database_url, "--dry-run"])

    out = capsys.readouterr().out
    assert code == 0
    assert "1 dramatiq-pg connection(s) are open" in out.replace("\n", " ")


# -- receiptq runs them ----------------------------------------------------------------


def test_a_real_dramatiq_worker_on_receiptq_runs_each_imported_job_once(
    database_url, conn, recorded
):
    conn.execute("CREATE TABLE test_imported_runs (message_id text, actor text, receipt_id int)")
    assert cli.main(["import", "dramatiq-pg", "--url", database_url]) == 0
    due_rows = conn.execute("SELECT message_id FROM receiptq.jobs WHERE run_at <= now()")
    due = {r["message_id"] for r in due_rows}
    scheduled = set(jobs(conn)) - due
    assert len(due) >= 3 and len(scheduled) >= 2

    workers = start_dramatiq("apps.dramatiq_pg_app", database_url, processes=1, threads=4)
    try:

        def ran() -> list[dict[str, Any]]:
            return conn.execute("SELECT message_id FROM test_imported_runs").fetchall()

        wait_until(lambda: len(ran()) >= len(due), 60, "the imported jobs to run")
        wait_until(
            lambda: set(jobs(conn)) == scheduled, 30, "their acks (only scheduled jobs left)"
        )
    finally:
        stop(workers)
    runs = [r["message_id"] for r in ran()]
    assert sorted(runs) == sorted(due)  # each once, and nothing scheduled ran early


@pytest.mark.skipif(
    not os.environ.get("RECEIPTQ_TEST_DRAMATIQ_PG_PYTHON"),
    reason="set RECEIPTQ_TEST_DRAMATIQ_PG_PYTHON to a Python with dramatiq<2 and dramatiq-pg",
)
def test_rows_that_dramatiq_pg_writes_now_import_once(database_url, conn, capsys):
    python = os.environ["RECEIPTQ_TEST_DRAMATIQ_PG_PYTHON"]
    done = subprocess.run(
        [python, str(TOOLS / "record_rows.py"), database_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)

    code, report = run_cli(capsys, database_url)

    assert code == 0
    assert set(jobs(conn)) == ids_in(rows, "queued", "consumed")
    assert set(dead_letters(conn)) == ids_in(rows, "rejected")


# -- the fixtures' own checks and the pure decisions ------------------------------------


def _shape(row: dict[str, Any]) -> tuple[Any, ...]:
    message = row["message"]
    return (
        tuple(sorted(row)),
        tuple(sorted(message)),
        {k: type(v).__name__ for k, v in message.items()},
        row["queue_name"] == message["queue_name"],
        row["queue_name"].endswith(".DQ") == ("eta" in message["options"]),
        type(message["options"].get("eta")).__name__,
    )


def test_rows_built_here_have_the_shape_of_the_rows_dramatiq_pg_wrote():
    recorded = recorded_rows()
    plain = next(r for r in recorded if r["state"] == "queued" and not eta_of(r))
    delayed = next(
        r for r in recorded if r["state"] == "queued" and r["message"]["options"].keys() == {"eta"}
    )

    assert _shape(sent("read_receipt", 1)) == _shape(plain)
    assert _shape(sent("read_receipt", 1, delay_ms=1000)) == _shape(delayed)
    assert {r["state"] for r in recorded} == {"queued", "consumed", "rejected", "done"}
    assert {r["queue_name"] for r in recorded} == {"receipts", "receipts.DQ", "emails", "emails.DQ"}


def _row(state: str, queue_name: str, **options: Any) -> SourceRow:
    built = sent("read_receipt", 1, queue=queue_name, options=options, state=state)
    return SourceRow(built["message_id"], queue_name, state, None, json.dumps(built["message"]))


def test_a_consumed_row_may_have_run_only_on_a_canonical_queue():
    on_queue = plan(_row("consumed", "receipts"), max_bytes=10_000, tiers=None)
    held_for_eta = plan(_row("consumed", "receipts.DQ", eta=1), max_bytes=10_000, tiers=None)

    assert isinstance(on_queue, Plan) and on_queue.may_have_run
    assert isinstance(held_for_eta, Plan) and not held_for_eta.may_have_run
    assert held_for_eta.queue == "receipts" and held_for_eta.kind == "job"


def test_a_row_on_a_dead_letter_queue_becomes_a_dead_letter():
    decided = plan(_row("queued", "receipts.XQ"), max_bytes=10_000, tiers=None)

    assert isinstance(decided, Plan) and decided.kind == "dead_letter"
    assert decided.queue == "receipts"


def test_a_done_row_is_never_planned_as_a_job():
    assert isinstance(plan(_row("done", "receipts"), max_bytes=10_000, tiers=None), Skip)


def test_the_error_of_a_dead_letter_is_the_last_line_of_its_traceback():
    tb = (
        'Traceback (most recent call last):\n  File "x.py", line 1\nmod.sub.Oops: it broke: twice\n'
    )

    assert error_of(tb) == ("Oops", "it broke: twice")
    assert error_of("KeyboardInterrupt") == (None, "KeyboardInterrupt")
    assert error_of(None) == (None, None)
