"""`receiptq receipts submit|list|show` and `receiptq users add|list` (in process)."""

from __future__ import annotations

import json
import random

import pytest

from receiptq import cli, db
from receiptq.services import images, receipts


@pytest.fixture
def url(database_url) -> str:
    return database_url


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_users_add_submit_list_and_show(url, conn, capsys, tmp_path):
    code, out, _ = run(
        capsys, "users", "add", "ana@example.test", "--tier", "pro", "--json", "--url", url
    )
    assert code == 0
    user = json.loads(out)
    assert user["tier"] == "pro"
    image = tmp_path / "receipt.png"
    image.write_bytes(images.render_receipt(images.random_receipt(random.Random(8))))
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"not an image")

    code, out, _ = run(capsys, "receipts", "submit", str(image), str(junk),
                       "--user", "ana@example.test", "--json", "--url", url)  # fmt: skip
    assert code == 0
    submitted = json.loads(out)["submitted"]
    assert [s["path"] for s in submitted] == [str(image), str(junk)]
    assert (
        conn.execute("SELECT count(*) AS n FROM receiptq.jobs WHERE queue = 'ocr'").fetchone()["n"]
        == 2
    )

    code, out, _ = run(capsys, "receipts", "list", "--status", "uploaded", "--json", "--url", url)
    assert code == 0
    listed = json.loads(out)["receipts"]
    assert sorted(r["id"] for r in listed) == sorted(s["receipt_id"] for s in submitted)

    receipt_id = submitted[1]["receipt_id"]
    db.execute(conn, "receipt_set_failed", {"id": receipt_id, "reason": "not a readable image"})
    code, out, _ = run(capsys, "receipts", "show", str(receipt_id), "--json", "--url", url)
    assert code == 0
    shown = json.loads(out)
    assert shown["status"] == "failed"
    assert shown["where"] == "failed: not a readable image"

    code, out, _ = run(capsys, "receipts", "show", str(receipt_id), "--url", url)
    assert code == 0 and "failed: not a readable image" in out
    code, out, _ = run(capsys, "users", "list", "--json", "--url", url)
    assert [u["email"] for u in json.loads(out)["users"]] == ["ana@example.test"]


def test_submit_refuses_an_unknown_user_or_a_missing_file_and_stores_nothing(
    url, conn, capsys, tmp_path
):
    image = tmp_path / "receipt.png"
    image.write_bytes(b"bytes")
    code, _, err = run(
        capsys, "receipts", "submit", str(image), "--user", "who@example.test", "--url", url
    )
    assert code == 1
    assert "no user 'who@example.test'" in err and "nothing was submitted" in err
    receipts.add_user(conn, "bo@example.test")
    code, _, err = run(capsys, "receipts", "submit", str(image), str(tmp_path / "missing.png"),
                       "--user", "bo@example.test", "--url", url)  # fmt: skip
    assert code == 2
    assert "missing.png" in err
    assert receipts.list_receipts(conn) == []
    assert conn.execute("SELECT count(*) AS n FROM receiptq.jobs").fetchone()["n"] == 0


def test_show_of_an_unknown_receipt_and_bad_options_are_errors(url, capsys):
    code, _, err = run(capsys, "receipts", "show", "999", "--url", url)
    assert code == 1 and "no receipt 999" in err
    assert run(capsys, "receipts", "list", "--status", "lost", "--url", url)[0] == 2
    code, _, err = run(capsys, "users", "add", "x@example.test", "--tier", "gold", "--url", url)
    assert code == 2 and "unknown tier" in err


def test_where_a_receipt_is_reads_as_a_sentence():
    matched = {"status": "notified", "transaction_id": 4, "transaction_description": "CARD CAFE",
               "transaction_amount": "4.30", "transaction_currency": "GBP",
               "transaction_posted_on": "2026-03-15", "score": 0.9712, "reason": None}  # fmt: skip
    from receiptq.cli.receipts import where

    assert where(matched) == (
        "notified: matched to transaction 4 (CARD CAFE, 4.30 GBP on 2026-03-15), score 0.97"
    )
    assert where(
        {**matched, "status": "unmatched", "transaction_id": None, "reason": "no bank transaction"}
    ) == (  # fmt: skip
        "unmatched: no bank transaction; email not sent yet: its send_email job is queued or"
        " retrying (SMTP server: RECEIPTQ_SMTP_HOST, RECEIPTQ_SMTP_PORT; `receiptq breakers"
        " list` shows an open email breaker)"
    )
    assert where({**matched, "status": "uploaded"}) == "uploaded, waiting for OCR"


def test_a_receipt_whose_ocr_job_died_shows_as_stuck_with_its_dead_letter(url, conn, capsys):
    user = receipts.add_user(conn, "bo@example.test")
    receipt_id = receipts.store_receipt(conn, user["id"], b"png bytes")
    dead = conn.execute(
        "INSERT INTO receiptq.dead_letters (message_id, queue, actor, message, attempts, reason,"
        " error_type, error) VALUES ('m-1', 'ocr', 'ocr_receipt', %s::jsonb, 6,"
        " 'retries exhausted', 'OcrUnavailable', 'the OCR service timed out') RETURNING id",
        (json.dumps({"args": [receipt_id]}),),
    ).fetchone()["id"]
    code, out, _ = run(capsys, "receipts", "show", str(receipt_id), "--json", "--url", url)
    assert code == 0
    shown = json.loads(out)
    assert shown["status"] == "uploaded"
    assert shown["where"] == (
        f"stuck: its ocr_receipt job is dead letter {dead} (OcrUnavailable: the OCR service"
        f" timed out); `receiptq dead-letter retry {dead}` runs it again"
    )
