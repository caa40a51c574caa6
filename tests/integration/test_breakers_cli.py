"""`receiptq breakers list|reset|open`, and what the breakers of every process make of them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta

import pybreaker
import pytest

from receiptq import cli
from receiptq.broker import PostgresBroker
from receiptq.middleware import breakers as breakers_module
from receiptq.middleware.breakers import (
    BreakerSettings,
    PostgresBreakerStorage,
    SharedCircuitBreaker,
    configure_breaker,
    get_breaker,
    open_breaker_wait_ms,
)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def down():
    raise ConnectionError("service down")


def breaker_row(conn, name: str):
    return conn.execute("SELECT * FROM receiptq.breakers WHERE name = %s", (name,)).fetchone()


@pytest.fixture
def breakers(monkeypatch) -> None:
    """Breakers "ocr" and "email": open after 2 failures, for 30 s."""
    monkeypatch.setattr(breakers_module, "_configured", {})
    configure_breaker("ocr", fail_max=2, reset_timeout_s=30)
    configure_breaker("email", fail_max=2, reset_timeout_s=30)


@pytest.fixture
def other_broker(database_url: str) -> Iterator[PostgresBroker]:
    """Another process's broker on the same database."""
    other = PostgresBroker(database_url)
    yield other
    other.close()


def trip(breaker: SharedCircuitBreaker) -> None:
    for _ in range(breaker.fail_max):
        with pytest.raises(ConnectionError):
            breaker.call(down)


def test_list_shows_every_breaker_as_a_table_and_as_json(broker, breakers, conn, capsys):
    code, out, _ = run(capsys, "breakers", "list", "--url", broker.url)
    assert code == 0 and "no circuit breakers" in out
    trip(get_breaker("ocr", broker=broker))
    with pytest.raises(ConnectionError):
        get_breaker("email", broker=broker).call(down)

    code, out, _ = run(capsys, "breakers", "list", "--json", "--url", broker.url)
    assert code == 0
    email, ocr = json.loads(out)["breakers"]
    assert email == {"name": "email", "state": "closed", "fail_counter": 1, "fail_max": 2,
                     "opened_at": None, "closes_at": None}  # fmt: skip
    opened_at = breaker_row(conn, "ocr")["opened_at"]
    assert ocr == {"name": "ocr", "state": "open", "fail_counter": 2, "fail_max": 2,
                   "opened_at": opened_at.isoformat(),
                   "closes_at": (opened_at + timedelta(seconds=30)).isoformat()}  # fmt: skip

    code, out, _ = run(capsys, "breakers", "list", "--url", broker.url)
    assert code == 0
    assert "Circuit breakers" in out
    cells = [line.replace("│", " ").split()[:3] for line in out.splitlines()]
    assert [c for c in cells if c[:1] in (["email"], ["ocr"])] == [
        ["email", "closed", "1/2"],
        ["ocr", "open", "2/2"],
    ]


def test_reset_closes_an_open_breaker_and_calls_go_through_again(
    broker, breakers, other_broker, conn, capsys
):
    breaker = get_breaker("ocr", broker=broker)
    trip(breaker)
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(lambda: "ok")
    assert open_breaker_wait_ms(broker, ["ocr"]) > 0  # its jobs would be postponed

    code, out, _ = run(capsys, "breakers", "reset", "ocr", "--json", "--url", broker.url)
    assert code == 0
    assert json.loads(out) == {"reset": [{"name": "ocr", "previous_state": "open"}], "count": 1}
    row = breaker_row(conn, "ocr")
    assert (row["state"], row["fail_counter"], row["success_counter"], row["opened_at"]) == (
        "closed", 0, 0, None,
    )  # fmt: skip
    assert open_breaker_wait_ms(broker, ["ocr"]) == 0
    # the breaker of this process, which saw it open, and another process's call again
    assert breaker.call(lambda: "ok") == "ok"
    assert get_breaker("ocr", broker=other_broker).call(lambda: "ok too") == "ok too"


def test_reset_all_and_the_text_report(broker, breakers, conn, capsys):
    trip(get_breaker("ocr", broker=broker))
    get_breaker("email", broker=broker)
    code, out, _ = run(capsys, "breakers", "reset", "--all", "--url", broker.url)
    assert code == 0
    assert out.splitlines() == ["closed email (was closed)", "closed ocr (was open)"]
    assert breaker_row(conn, "ocr")["state"] == "closed"


def test_unknown_names_and_bad_arguments_fail_and_change_nothing(broker, breakers, conn, capsys):
    trip(get_breaker("ocr", broker=broker))
    code, _, err = run(capsys, "breakers", "reset", "ocr", "ftp", "--url", broker.url)
    assert code == 1
    assert "no circuit breaker named ftp" in err and "nothing was changed" in err
    assert breaker_row(conn, "ocr")["state"] == "open"  # not reset either

    code, _, err = run(capsys, "breakers", "open", "ftp", "--for", "5m", "--url", broker.url)
    assert code == 1 and "no circuit breaker named ftp" in err
    assert breaker_row(conn, "ftp") is None

    for argv in (
        ("reset", "OCR; DROP TABLE receiptq.breakers"),
        ("reset",),
        ("reset", "ocr", "--all"),
        ("open", "ocr", "--for", "0s"),
        ("open", "ocr", "--for", "soon"),
        ("open", "ocr"),
    ):
        code, _, err = run(capsys, "breakers", *argv, "--url", broker.url)
        assert code == 2, argv
    assert breaker_row(conn, "ocr")["state"] == "open"


def test_open_for_holds_in_every_process_then_the_breaker_half_opens(
    broker, breakers, other_broker, conn, capsys
):
    mine = get_breaker("ocr", broker=broker)  # reset timeout 30 s
    code, out, _ = run(capsys, "breakers", "open", "ocr", "--for", "1s", "--json",
                       "--url", broker.url)  # fmt: skip
    assert code == 0
    shown = json.loads(out)
    assert (shown["name"], shown["state"]) == ("ocr", "open")
    row = breaker_row(conn, "ocr")
    assert shown["closes_at"] == (row["opened_at"] + timedelta(seconds=1)).isoformat()

    # Another process's breaker, set to stay open 0.2 s only; registering it while
    # the breaker is open keeps the forced duration.
    theirs = SharedCircuitBreaker(
        fail_max=2,
        reset_timeout=0.2,
        state_storage=PostgresBreakerStorage(
            "ocr", other_broker.pool_connection, BreakerSettings(2, 0.2)
        ),
        name="ocr",
    )
    assert 0 < open_breaker_wait_ms(broker, ["ocr"]) <= 1000  # jobs are postponed
    time.sleep(0.3)  # past theirs's own reset timeout, not past the forced second
    calls = []
    for breaker in (mine, theirs):
        with pytest.raises(pybreaker.CircuitBreakerError):
            breaker.call(calls.append, 1)
    assert calls == []  # refused without calling

    half_open_at = row["opened_at"] + timedelta(seconds=1)
    wait_s = (half_open_at - conn.execute("SELECT now()").fetchone()["now"]).total_seconds()
    time.sleep(max(wait_s, 0) + 0.05)
    assert open_breaker_wait_ms(broker, ["ocr"]) == 0  # jobs run again
    # this process (reset timeout 30 s) makes the trial call: the breaker is half-open
    assert mine.call(lambda: breaker_row(conn, "ocr")["state"]) == "half-open"
    assert breaker_row(conn, "ocr")["state"] == "closed"

    # An opening after the forced one lasts the opener's own reset timeout again.
    trip(mine)
    row = breaker_row(conn, "ocr")
    assert (row["state"], row["reset_timeout_s"]) == ("open", 30)
