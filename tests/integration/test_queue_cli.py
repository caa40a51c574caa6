"""`receiptq queue pause|resume|cap|list` and what the claim makes of them."""

from __future__ import annotations

import json

import dramatiq

from receiptq import cli, db


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_pause_resume_and_cap_are_listed_and_honoured_by_the_claim(broker, capsys, database_url):
    @dramatiq.actor(queue_name="ocr")
    def ocr_receipt(n):
        pass

    for n in range(5):
        ocr_receipt.send(n)
    code, out, _ = run(capsys, "queue", "pause", "ocr", "--json", "--url", database_url)
    assert code == 0
    assert json.loads(out) == {
        "ocr": {
            "paused": True,
            "max_running": None,
            "prefetch": None,
            "running": 0,
            "reserved": 0,
            "actors": {},
        }
    }
    assert broker.claim("ocr", 10) == []

    run(capsys, "queue", "resume", "ocr", "--url", database_url)
    code, out, _ = run(capsys, "queue", "cap", "ocr", "2", "--json", "--url", database_url)
    assert json.loads(out)["ocr"] == {
        "paused": False,
        "max_running": 2,
        "prefetch": None,
        "running": 0,
        "reserved": 0,
        "actors": {},
    }
    assert len(broker.claim("ocr", 10)) == 2

    code, out, _ = run(capsys, "queue", "list", "--json", "--url", database_url)
    assert (json.loads(out)["ocr"]["running"], json.loads(out)["ocr"]["reserved"]) == (0, 2)
    run(capsys, "queue", "cap", "ocr", "none", "--url", database_url)
    assert len(broker.claim("ocr", 10)) == 3


def test_queue_prefetch_is_listed_bounds_what_a_process_holds_and_can_be_removed(
    broker, capsys, database_url
):
    @dramatiq.actor(queue_name="ocr")
    def ocr_receipt(n):
        pass

    for n in range(6):
        ocr_receipt.send(n)
    code, out, _ = run(capsys, "queue", "prefetch", "ocr", "2", "--json", "--url", database_url)
    assert code == 0 and json.loads(out)["ocr"]["prefetch"] == 2
    consumer = broker.consume("ocr", prefetch=16, timeout=200)
    try:
        assert [next(consumer) is not None for _ in range(3)] == [True, True, False]
        code, out, _ = run(
            capsys, "queue", "prefetch", "ocr", "none", "--json", "--url", database_url
        )
        assert json.loads(out)["ocr"]["prefetch"] is None
        assert next(consumer) is not None  # read again at the next poll interval
    finally:
        consumer.close()
    code, _, err = run(capsys, "queue", "list", "--url", database_url)
    assert code == 0


def test_queue_prefetch_below_one_is_refused(capsys, database_url):
    for bad in ("0", "-1", "many"):
        try:
            code = cli.main(["queue", "prefetch", "ocr", bad, "--url", database_url])
        except SystemExit as exc:
            code = exc.code
        assert code == 2


def test_hostile_queue_name_and_bad_cap_are_refused(capsys, database_url):
    code, _, err = run(capsys, "queue", "pause", "x; DROP TABLE jobs", "--url", database_url)
    assert code == 2 and "invalid queue name" in err
    try:
        code = cli.main(["queue", "cap", "ocr", "-3", "--url", database_url])
    except SystemExit as exc:  # argparse rejects it before anything runs
        code = exc.code
    assert code == 2


def test_actor_cap_is_listed_and_bounds_only_that_actors_jobs(broker, capsys, database_url):
    @dramatiq.actor(queue_name="shared")
    def ocr_receipt(n):
        pass

    @dramatiq.actor(queue_name="shared")
    def send_email(n):
        pass

    broker.enqueue_many([ocr_receipt.message(n) for n in range(5)])
    broker.enqueue_many([send_email.message(n) for n in range(5)])
    argv = ("queue", "cap", "shared", "2", "--actor", "ocr_receipt", "--json", "--url")
    code, out, err = run(capsys, *argv, database_url)
    assert code == 0 and err == ""
    assert json.loads(out)["shared"]["actors"] == {
        "ocr_receipt": {"max_running": 2, "running": 0, "reserved": 0}
    }
    assert broker.claim_path("shared") == "locked"
    # The fast paths refuse the queue; the claim function takes 2 OCR jobs and every email.
    assert broker.claim("shared", 20, path="fair") == []
    claimed = broker.claim("shared", 20)
    assert sorted(m.actor_name for m in claimed) == ["ocr_receipt"] * 2 + ["send_email"] * 5
    assert broker.claim("shared", 20) == []
    broker.finish(claimed[0])
    assert broker.wait_for_acks(5)
    assert [m.actor_name for m in broker.claim("shared", 20)] == ["ocr_receipt"]

    code, out, _ = run(capsys, "queue", "list", "--url", database_url)
    assert "actor caps" in out and "ocr_receipt" in out
    run(capsys, "queue", "cap", "shared", "none", "--actor", "ocr_receipt", "--url", database_url)
    assert broker.claim_path("shared") == "plain"
    assert len(broker.claim("shared", 20)) == 2


def test_actor_cap_warns_about_an_actor_never_seen_and_refuses_a_bad_name(capsys, database_url):
    code, _, err = run(capsys, "queue", "cap", "ocr", "1", "--actor", "nope", "--url", database_url)
    assert code == 0 and "no job of actor 'nope' was seen on queue 'ocr'" in err
    code, _, err = run(
        capsys, "queue", "cap", "ocr", "1", "--actor", "x'; drop", "--url", database_url
    )
    assert code == 2 and "invalid actor name" in err


def settings_rows(database_url):
    with db.connect(database_url) as conn:
        return [row["queue"] for row in conn.execute("SELECT queue FROM receiptq.queue_settings")]


def test_a_setting_on_a_queue_never_seen_warns_and_reset_removes_it(capsys, database_url):
    code, _, err = run(capsys, "queue", "pause", "orc", "--url", database_url)
    assert code == 0
    assert err == (
        "receiptq: warning: queue 'orc' was never seen (no jobs, dead letters, statistics, "
        "settings or workers): check its name; `receiptq queue reset orc` removes its settings\n"
    )
    code, out, _ = run(capsys, "queue", "list", "--json", "--url", database_url)
    assert json.loads(out)["orc"]["paused"] is True

    code, out, err = run(capsys, "queue", "reset", "orc", "--json", "--url", database_url)
    assert (code, err, json.loads(out)) == (0, "", {})
    assert settings_rows(database_url) == []
    code, _, err = run(capsys, "queue", "reset", "orc", "--url", database_url)
    assert (
        code == 0 and err == "receiptq: warning: queue 'orc' had no settings; nothing was changed\n"
    )


def test_reset_removes_the_pause_the_cap_and_the_actor_caps(broker, capsys, database_url):
    broker.declare_queue("ocr")
    broker.enqueue(dramatiq.Message("ocr", "ocr_receipt", (1,), {}, {}))
    for argv in (
        ["pause", "ocr"],
        ["cap", "ocr", "3"],
        ["cap", "ocr", "1", "--actor", "ocr_receipt"],
    ):
        code, _, err = run(capsys, "queue", *argv, "--url", database_url)
        assert (code, err) == (0, "")  # a queue with jobs is known: no warning
    code, out, _ = run(capsys, "queue", "reset", "ocr", "--json", "--url", database_url)
    assert json.loads(out) == {
        "ocr": {
            "paused": False,
            "max_running": None,
            "prefetch": None,
            "running": 0,
            "reserved": 0,
            "actors": {},
        }
    }
    assert broker.claim_path("ocr") == "plain"


def test_resume_and_uncap_leave_no_settings_row(broker, capsys, database_url):
    broker.declare_queue("ocr")
    broker.enqueue(dramatiq.Message("ocr", "ocr_receipt", (1,), {}, {}))
    run(capsys, "queue", "pause", "ocr", "--url", database_url)
    run(capsys, "queue", "resume", "ocr", "--url", database_url)
    assert settings_rows(database_url) == []
    run(capsys, "queue", "cap", "ocr", "2", "--url", database_url)
    assert settings_rows(database_url) == ["ocr"]
    run(capsys, "queue", "cap", "ocr", "none", "--url", database_url)
    assert settings_rows(database_url) == []
    # A queue paused and capped keeps its row until both are undone.
    run(capsys, "queue", "pause", "ocr", "--url", database_url)
    run(capsys, "queue", "cap", "ocr", "2", "--url", database_url)
    run(capsys, "queue", "resume", "ocr", "--url", database_url)
    assert settings_rows(database_url) == ["ocr"]


def test_queue_list_shows_every_known_queue(broker, capsys, database_url):
    for queue in ("ocr", "mail", "email", "matching"):
        broker.declare_queue(queue)
    broker.enqueue(dramatiq.Message("ocr", "ocr_receipt", (1,), {}, {}))  # a job
    broker.enqueue(dramatiq.Message("mail", "send_email", (1,), {}, {}))
    [job] = broker.claim("mail", 1)
    job.fail()
    broker.bury(job)  # a dead letter
    broker._flusher.count("email", "send_email", succeeded=1)  # statistics only
    broker.wait_for_acks(5)
    broker._flusher._write_stats()
    consumer = broker.consume("matching")  # a worker that consumes it
    broker.heartbeat_now()
    consumer.close()
    run(capsys, "queue", "cap", "capped", "1", "--url", database_url)  # a setting only

    code, out, _ = run(capsys, "queue", "list", "--json", "--url", database_url)
    listing = json.loads(out)
    assert sorted(listing) == ["capped", "email", "mail", "matching", "ocr"]
    assert listing["ocr"] == {
        "paused": False,
        "max_running": None,
        "prefetch": None,
        "running": 0,
        "reserved": 0,
        "actors": {},
    }
    code, out, _ = run(capsys, "queue", "list", "--url", database_url)
    assert all(queue in out for queue in listing)
