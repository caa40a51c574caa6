"""Every command says in one line what is wrong and what to do when the database is not
migrated, cannot be reached, or its URL is malformed; never a traceback, never the
password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from receiptq import cli, db
from tests_support import free_port

RECEIPTQ = Path(sys.executable).with_name("receiptq")
URL_EXAMPLE = "use postgresql://USER:PASSWORD@HOST:5432/DBNAME"

#: Commands that work on receiptq's tables (and the receipt app's).
TABLE_COMMANDS = [
    ["status"],
    ["status", "--watch"],
    ["dead-letter", "list"],
    ["dead-letter", "show", "1"],
    ["dead-letter", "retry", "--all"],
    ["dead-letter", "purge", "--all"],
    ["queue", "list"],
    ["queue", "pause", "ocr"],
    ["queue", "cap", "ocr", "2"],
    ["breakers", "list"],
    ["breakers", "reset", "--all"],
    ["breakers", "open", "ocr", "--for", "1m"],
    ["receipts", "list"],
    ["receipts", "show", "1"],
    ["users", "list"],
    ["top", "--json"],
    ["web", "--port", "65000"],  # never started: the database check fails first
    ["enqueue", "ocr_receipt", "--args", "[1]"],
    ["process", "--burst"],
]
#: Commands that make databases of their own on the server (so need no migrated one).
SERVER_COMMANDS = [["bench", "--workload", "drain"], ["demo"]]


def run_failing(capsys, argv, expected_code):
    """cli.main(argv): its exit code, and its one line of error (stdout stays empty;
    the demo may say which database it uses first)."""
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == expected_code, err
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 or (argv[0] == "demo" and lines[0].startswith("database: ")), err
    assert lines[-1].startswith("receiptq: error: ")
    return lines[-1].removeprefix("receiptq: error: ")


def where(url: str) -> str:
    params = conninfo_to_dict(url)
    return f"{params['host']}:{params.get('port', 5432)}/{params['dbname']}"


@pytest.mark.parametrize("argv", TABLE_COMMANDS, ids=" ".join)
def test_a_command_on_an_unmigrated_database_says_to_migrate(argv, empty_database_url, capsys):
    line = run_failing(capsys, [*argv, "--url", empty_database_url], 1)
    if argv[0] in ("receipts", "users"):  # the receipt app's chain applies both
        assert line == (
            f"the database at {where(empty_database_url)} has no receipt app tables: "
            "run `receiptq receipts migrate`"
        )
    else:
        assert line == (
            f"the database at {where(empty_database_url)} is not migrated: "
            "run `receiptq db migrate`"
        )


@pytest.mark.parametrize("argv", TABLE_COMMANDS + SERVER_COMMANDS, ids=" ".join)
def test_a_command_on_an_unreachable_database_says_where_and_what_to_check(argv, capsys):
    port = free_port()
    line = run_failing(capsys, [*argv, "--url", f"postgresql://app:s3cret@127.0.0.1:{port}/app"], 1)
    assert line == (
        f"cannot reach the database at 127.0.0.1:{port}/app (connection refused): check that "
        "PostgreSQL is running there and that the URL's host and port are right"
    )


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("notaurl", "--url is not a PostgreSQL URL (notaurl)"),
        ("mysql://app:s3cret@db/app", "--url is a mysql:// URL, not a PostgreSQL one"),
        ("postgresql://app:s3cret@db:x/app", "--url has the port 'x', not a number"),
        ("", "--url is empty: give a PostgreSQL URL such as postgresql://"),
    ],
    ids=["not-a-url", "mysql", "bad-port", "empty"],
)
@pytest.mark.parametrize("argv", TABLE_COMMANDS + SERVER_COMMANDS, ids=" ".join)
def test_a_malformed_url_is_refused_naming_the_setting(argv, url, words, capsys):
    line = run_failing(capsys, [*argv, "--url", url], 2)
    assert line.startswith(words) and "s3cret" not in line
    assert "postgresql://USER:PASSWORD@HOST:5432/DBNAME" in line


@pytest.mark.parametrize("variable", ["RECEIPTQ_DATABASE_URL", "DATABASE_URL"])
@pytest.mark.parametrize("argv", TABLE_COMMANDS + SERVER_COMMANDS, ids=" ".join)
def test_a_malformed_url_in_the_environment_is_named(argv, variable, capsys, monkeypatch):
    monkeypatch.delenv("RECEIPTQ_DATABASE_URL", raising=False)
    monkeypatch.setenv(variable, "garbage")
    line = run_failing(capsys, argv, 2)
    assert line == f"{variable} is not a PostgreSQL URL (garbage): {URL_EXAMPLE}"


def test_the_console_script_says_the_same_in_one_line(empty_database_url):
    def receiptq(*argv, env=None):
        done = subprocess.run(
            [str(RECEIPTQ), *argv], capture_output=True, text=True, timeout=60, env=env
        )
        return done.returncode, done.stdout, done.stderr

    code, out, err = receiptq("status", "--url", empty_database_url)
    assert (code, out) == (1, "")
    assert err == (
        f"receiptq: error: the database at {where(empty_database_url)} is not migrated: "
        "run `receiptq db migrate`\n"
    )
    code, out, err = receiptq(
        "queue", "list", env={"PATH": "/usr/bin", "RECEIPTQ_DATABASE_URL": "mysql://a:s3cret@b/c"}
    )
    assert (code, out) == (2, "")
    assert err == (
        "receiptq: error: RECEIPTQ_DATABASE_URL is a mysql:// URL, not a PostgreSQL one: "
        f"{URL_EXAMPLE}\n"
    )


def test_a_partly_migrated_database_says_to_migrate(empty_database_url, capsys):
    # As left by an older receiptq: the first migration only.
    (name, first), *_ = db.migration_files()
    with db.connect(empty_database_url) as conn:
        conn.execute(db.query("migration_bootstrap"))
        conn.execute(first)
        conn.execute(db.query("migration_record"), {"name": name})
    for argv in (["status"], ["queue", "list"], ["breakers", "list"]):
        line = run_failing(capsys, [*argv, "--url", empty_database_url], 1)
        assert line == (
            f"the database at {where(empty_database_url)} is not migrated: "
            "run `receiptq db migrate`"
        )
