"""Settings: read from the environment in one module, every value passable in code
(0 included), malformed values as one line naming the variable; importing the
workers' module reads nothing and connects nowhere."""

from __future__ import annotations

import dataclasses
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from receiptq.breaker_storage import breaker_settings
from receiptq.broker import PostgresBroker
from receiptq.errors import ConfigError
from receiptq.periodic import ensure_periodiq
from receiptq.settings import Settings, readme_table

SRC = Path(__file__).resolve().parents[2] / "src" / "receiptq"
README = Path(__file__).resolve().parents[2] / "README.md"
#: What reads the environment: allowed in settings.py only.
ENVIRONMENT_READ = re.compile(r"\bos\.environ\b|\bgetenv\b|\benviron\.get\b")


def test_no_module_but_settings_reads_the_environment():
    readers = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "settings.py" or path.parent != SRC
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if ENVIRONMENT_READ.search(line)
    ]
    assert readers == []


def test_the_readme_lists_every_setting():
    assert readme_table() in README.read_text()
    for spec in dataclasses.fields(Settings):
        if spec.name != "breakers":  # RECEIPTQ_BREAKER_<NAME>_*: one row of its own
            assert f"| `RECEIPTQ_{spec.name.upper()}` |" in readme_table()


def test_settings_come_from_the_environment_then_from_code():
    env = {"RECEIPTQ_LEASE_S": "12.5", "RECEIPTQ_LISTEN": "0", "DATABASE_URL": "postgresql:///x"}
    settings = Settings.from_env(env)
    assert (settings.lease_s, settings.listen, settings.database_url) == (
        12.5,
        False,
        "postgresql:///x",
    )
    assert Settings.from_env(env, lease_s=3, listen=None).lease_s == 3
    assert Settings.from_env(env, listen=None).listen is False  # None: not given
    assert Settings.from_env({}) == Settings()


@pytest.mark.parametrize(
    "field, variable",
    [
        ("ack_flush_ms", "RECEIPTQ_ACK_FLUSH_MS"),
        ("ocr_threads", "RECEIPTQ_OCR_THREADS"),
        ("periodic_skip_delay_s", "RECEIPTQ_PERIODIC_SKIP_DELAY_S"),
        ("throttle_cpu_percent", "RECEIPTQ_THROTTLE_CPU_PERCENT"),
        ("service_fail_rate", "RECEIPTQ_SERVICE_FAIL_RATE"),
    ],
)
def test_zero_is_a_value_in_code_and_in_the_environment(field, variable):
    assert getattr(Settings.from_env({variable: "7"}, **{field: 0}), field) == 0
    assert getattr(Settings.from_env({variable: "0"}), field) == 0


def test_zero_reaches_the_broker_the_middleware_and_the_breakers(database_url):
    env_settings = Settings.from_env({"RECEIPTQ_ACK_FLUSH_MS": "9"})
    broker = PostgresBroker(database_url, settings=env_settings, ack_flush_ms=0)
    try:
        assert broker.settings.ack_flush_ms == 0
        assert broker._flusher._ack_flush_s == 0
        ensure_periodiq(broker, skip_delay_s=0)
        (periodiq,) = [m for m in broker.middleware if type(m).__name__ == "_Periodiq"]
        assert periodiq.skip_delay == 0
    finally:
        broker.close()
    env = Settings.from_env(
        {"RECEIPTQ_BREAKER_PDF_FAIL_MAX": "2", "RECEIPTQ_BREAKER_PDF_RESET_S": "9"}
    )
    limits = breaker_settings("pdf", env)
    assert (limits.fail_max, limits.reset_timeout_s) == (2, 9.0)


@pytest.mark.parametrize(
    "variable, value, said",
    [
        ("RECEIPTQ_LEASE_S", "soon", "RECEIPTQ_LEASE_S must be a number, got 'soon'"),
        ("RECEIPTQ_LEASE_S", "0", "RECEIPTQ_LEASE_S (lease_s) must be above 0, got 0.0"),
        (
            "RECEIPTQ_POOL_MAX_SIZE",
            "0",
            "RECEIPTQ_POOL_MAX_SIZE (pool_max_size) must be at least 1",
        ),
        ("RECEIPTQ_ACK_FLUSH_MS", "-1", "RECEIPTQ_ACK_FLUSH_MS (ack_flush_ms) must be at least 0"),
        ("RECEIPTQ_POLL_INTERVAL_MS", "1.5", "RECEIPTQ_POLL_INTERVAL_MS must be an integer"),
        ("RECEIPTQ_LISTEN", "maybe", "RECEIPTQ_LISTEN must be 1 or 0 (on or off), got 'maybe'"),
        ("RECEIPTQ_SMTP_TLS", "tls1.3", "RECEIPTQ_SMTP_TLS must be one of none, starttls, ssl"),
        ("RECEIPTQ_SMTP_PORT", "70000", "RECEIPTQ_SMTP_PORT must be a port (1-65535)"),
        ("RECEIPTQ_SERVICE_FAIL_RATE", "2", "RECEIPTQ_SERVICE_FAIL_RATE must be between 0 and 1"),
        ("RECEIPTQ_BREAKER_OCR_RESET_S", "later", "RECEIPTQ_BREAKER_OCR_RESET_S must be a number"),
        ("RECEIPTQ_DATABASE_URL", "mysql://db/x", "RECEIPTQ_DATABASE_URL is a mysql:// URL"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_variable(variable, value, said):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})
    message = str(raised.value)
    assert said in message
    assert "\n" not in message


def test_a_bad_value_in_code_is_one_line_too():
    with pytest.raises(ConfigError, match=r"^RECEIPTQ_LEASE_S \(lease_s\) must be above 0"):
        Settings(lease_s=0)


IMPORT_ACTORS = """
import sys, dramatiq
import receiptq.actors
broker = dramatiq.get_broker()
print(type(broker).__name__, "settings" in vars(broker), "runtime" in vars(broker))
"""


@pytest.mark.parametrize("with_url", [True, False])
def test_importing_the_workers_module_reads_nothing_and_connects_nowhere(tmp_path, with_url):
    """With a URL whose port accepts but must see no connection (or with no URL: no
    embedded server), and a malformed setting that reading would refuse."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "RECEIPTQ_HOME": str(tmp_path / "home"),
        "RECEIPTQ_LEASE_S": "not-a-number",  # read now, it would fail the import
    }
    if with_url:
        env["RECEIPTQ_DATABASE_URL"] = f"postgresql://nobody@127.0.0.1:{port}/nothing"
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", IMPORT_ACTORS],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["AppBroker", "False", "False"]
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody knocked
    finally:
        listener.close()
    assert not (tmp_path / "home").exists()  # no embedded PostgreSQL
    assert elapsed < 30


def test_a_broker_reads_its_settings_on_first_use_not_when_built_or_closed(monkeypatch):
    monkeypatch.setenv("RECEIPTQ_LEASE_S", "not-a-number")
    broker = PostgresBroker(middleware=[])
    broker.declare_queue("nothing_read")
    broker.close()
    with pytest.raises(ConfigError, match="^RECEIPTQ_LEASE_S must be a number"):
        broker.lease_s  # noqa: B018  (the first use)


def test_the_app_broker_declares_the_receipt_steps_on_first_use(monkeypatch):
    from receiptq.actors.app import AppBroker

    broker = AppBroker()
    monkeypatch.setenv("RECEIPTQ_RECEIPT_QUEUE_PREFIX", "late.")
    monkeypatch.delenv("RECEIPTQ_OCR_URL", raising=False)
    try:
        assert {"late.ocr", "late.matching", "late.email"} <= broker.get_declared_queues()
        assert broker.get_actor("ocr_receipt").options["prefetch"] == 1
        assert broker.get_actor("send_email").queue_name == "late.email"
    finally:
        broker.close()
