"""`receiptq transactions add|import|list`: bank transactions for a README-only user,
so that receipts can match; bad input is one line naming the line and the field, and
nothing is stored."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import dramatiq
import pytest

from receiptq import cli
from receiptq.broker import PostgresBroker
from receiptq.services import images, receipts

CSV = """user,posted_on,amount,currency,description
ana@example.test,2026-03-14,9.84,EUR,CARD CORNER CAFE
ana@example.test,2026-03-20,61.00,EUR,CARD FUEL STATION 12
"""


class FixedOcr:
    def read_text(self, image: bytes) -> str:
        return "CORNER CAFE\nDate: 2026-03-14\nTOTAL EUR 9.84"


@pytest.fixture
def url(database_url, conn, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "250")
    receipts.add_user(conn, "ana@example.test")
    return database_url


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def count(conn) -> int:
    row = conn.execute("SELECT count(*) AS n FROM receiptq_app.bank_transactions").fetchone()
    return int(row["n"])


def test_imported_transactions_are_listed_and_a_receipt_matches_one(url, conn, capsys, tmp_path):
    path = tmp_path / "bank.csv"
    path.write_text("\ufeff" + CSV)  # as a spreadsheet saves it, with a BOM

    code, out, _ = run(capsys, "transactions", "import", str(path), "--json", "--url", url)

    assert code == 0
    stored = json.loads(out)
    assert stored["stored"] == 2
    assert [t["description"] for t in stored["transactions"]] == [
        "CARD CORNER CAFE", "CARD FUEL STATION 12",
    ]  # fmt: skip
    code, out, _ = run(capsys, "transactions", "list", "--user", "ana@example.test", "--url", url)
    assert code == 0 and "CARD FUEL STATION 12" in out and "CARD CORNER CAFE" in out

    # The receipt app matches a receipt against them (the steps its jobs run).
    broker = PostgresBroker(url)
    dramatiq.set_broker(broker)  # the OCR breaker's store
    user = receipts.get_user(conn, "ana@example.test")
    image = images.render_receipt(images.random_receipt(random.Random(2)))
    receipt_id = receipts.store_receipt(conn, user["id"], image)
    receipts.read_receipt(conn, receipt_id, FixedOcr())
    context = receipts.match_receipt(conn, receipt_id)
    broker.close()
    assert context["outcome"] == "matched"
    assert (
        receipts.get_receipt(conn, receipt_id)["transaction_id"] == stored["transactions"][0]["id"]
    )
    code, out, _ = run(capsys, "transactions", "list", "--json", "--url", url)
    listed = {t["description"]: t["receipt_id"] for t in json.loads(out)["transactions"]}
    assert listed == {"CARD CORNER CAFE": receipt_id, "CARD FUEL STATION 12": None}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CSV.replace("9.84", "9,84"), "line 2: expected 5 fields, got 6 (amounts take a dot"),
        (CSV.replace("9.84", "9.8x"), "line 2: amount '9.8x' is not an amount"),
        (CSV.replace("2026-03-20", "20/03/2026"), "line 3: posted_on '20/03/2026' is not a date"),
        (CSV.replace("61.00,EUR", "61.00,EURO"), "line 3: currency 'EURO' is not a currency"),
        (CSV.replace("user,", "who,"), "line 1: the header must name the columns"),
        (CSV + "ana@example.test,2026-03-21,1.00\n", "line 4: expected 5 fields, got 3"),
        (CSV.replace("9.84", "9" * 500), "is not an amount"),
        ("user,posted_on,amount,currency,description\n", "no transactions"),
    ],
)
def test_a_bad_csv_line_is_named_in_one_line_and_nothing_is_stored(
    url, conn, capsys, tmp_path, text, expected
):
    path = tmp_path / "bank.csv"
    path.write_text(text)

    code, out, err = run(capsys, "transactions", "import", str(path), "--url", url)

    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and expected in err and "nothing was stored" in err
    assert len(err) < 300  # a long bad value is cut
    assert count(conn) == 0


def test_an_unknown_user_is_named_with_its_line_and_nothing_is_stored(url, conn, capsys, tmp_path):
    path = tmp_path / "bank.csv"
    path.write_text(CSV + "who@example.test,2026-03-21,1.00,EUR,CARD SHOP\n")

    code, _, err = run(capsys, "transactions", "import", str(path), "--url", url)

    assert code == 1
    assert err == "receiptq: error: line 4: no user 'who@example.test'; nothing was stored\n"
    assert count(conn) == 0


def test_transactions_add_stores_one_and_refuses_a_bad_field(url, conn, capsys):
    base = ["transactions", "add", "--user", "ana@example.test", "--currency", "eur",
            "--description", "CARD BAKERY", "--url", url]  # fmt: skip

    code, _, err = run(capsys, *base, "--date", "2026-02-30", "--amount", "4.30")
    assert code == 2 and "posted_on '2026-02-30' is not a date" in err
    code, _, err = run(capsys, *base, "--date", "2026-03-01", "--amount", "4.305")
    assert code == 2 and "amount '4.305' is not an amount" in err
    assert count(conn) == 0

    code, out, _ = run(capsys, *base, "--date", "2026-03-01", "--amount", "4.30", "--json")
    assert code == 0
    [row] = json.loads(out)["transactions"]
    assert (row["currency"], row["amount"], row["posted_on"]) == ("EUR", "4.30", "2026-03-01")
    assert Decimal(row["amount"]) == Decimal("4.30") and count(conn) == 1
