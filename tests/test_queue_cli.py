"""`receiptq queue pause|resume|cap|list` and what the claim makes of them."""

from __future__ import annotations

import json

import dramatiq

from receiptq import cli


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
    assert json.loads(out) == {"ocr": {"paused": True, "max_running": None, "running": 0}}
    assert broker.claim("ocr", 10) == []

    run(capsys, "queue", "resume", "ocr", "--url", database_url)
    code, out, _ = run(capsys, "queue", "cap", "ocr", "2", "--json", "--url", database_url)
    assert json.loads(out)["ocr"] == {"paused": False, "max_running": 2, "running": 0}
    assert len(broker.claim("ocr", 10)) == 2

    code, out, _ = run(capsys, "queue", "list", "--json", "--url", database_url)
    assert json.loads(out)["ocr"]["running"] == 2
    run(capsys, "queue", "cap", "ocr", "none", "--url", database_url)
    assert len(broker.claim("ocr", 10)) == 3


def test_hostile_queue_name_and_bad_cap_are_refused(capsys, database_url):
    code, _, err = run(capsys, "queue", "pause", "x; DROP TABLE jobs", "--url", database_url)
    assert code == 2 and "invalid queue name" in err
    try:
        code = cli.main(["queue", "cap", "ocr", "-3", "--url", database_url])
    except SystemExit as exc:  # argparse rejects it before anything runs
        code = exc.code
    assert code == 2
