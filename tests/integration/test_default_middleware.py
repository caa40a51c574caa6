"""A PostgresBroker built without a middleware list gets receiptq's stack, so the
README's first snippet honours PermanentError as printed."""

from __future__ import annotations

import logging
from pathlib import Path

import dramatiq
import pytest
from dramatiq.middleware import Retries

from receiptq import broker as broker_module
from receiptq.broker import PostgresBroker
from receiptq.errors import PermanentError
from receiptq.middleware import BackoffRetries, CircuitBreakers

README = Path(__file__).resolve().parents[2] / "README.md"
#: The URL the README's snippet is printed with.
README_URL = "postgresql://app@db/app"


def readme_snippet(section: str, language: str) -> str:
    """The first code block of a README section."""
    body = README.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return body.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_using_it_starts_with_the_migration():
    assert readme_snippet("Using it", "sh").startswith(f"receiptq db migrate --url {README_URL}")


def test_readme_first_snippet_runs_and_dead_letters_a_permanent_error_at_once(database_url, conn):
    code = readme_snippet("Using it", "python")
    assert f'PostgresBroker(url="{README_URL}")' in code
    namespace: dict = {}
    exec(compile(code.replace(README_URL, database_url), "README.md", "exec"), namespace)
    broker = namespace["broker"]
    try:
        sent = conn.execute("SELECT queue, actor FROM receiptq.jobs").fetchall()
        assert sent == [{"queue": "ocr", "actor": "ocr_receipt"}] * 2

        @dramatiq.actor(queue_name="checks", max_retries=5)
        def reject_receipt(receipt_id: int) -> None:
            raise PermanentError(f"receipt {receipt_id} is not a receipt")

        reject_receipt.send(42)
        worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
        worker.start()
        try:
            broker.join("checks", timeout=10_000)
            worker.join()
        finally:
            worker.stop()
        dead = conn.execute("SELECT actor, reason, attempts FROM receiptq.dead_letters").fetchall()
        assert dead == [{"actor": "reject_receipt", "reason": "permanent error", "attempts": 1}]
    finally:
        broker.close()


def test_a_broker_without_a_middleware_list_gets_receiptqs_stack(database_url):
    broker = PostgresBroker(database_url)
    try:
        kinds = [type(m) for m in broker.middleware]
        assert BackoffRetries in kinds and CircuitBreakers in kinds
        assert Retries not in kinds  # Dramatiq's plain Retries is replaced, not doubled
    finally:
        broker.close()


def test_a_middleware_list_with_plain_retries_warns_once(database_url, caplog):
    broker_module._warn_plain_retries.cache_clear()
    brokers = [PostgresBroker(database_url, middleware=[Retries()]) for _ in range(2)]
    try:
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "PermanentError" in warnings[0].getMessage()
        assert "receiptq_middleware()" in warnings[0].getMessage()
    finally:
        for broker in brokers:
            broker.close()


def test_a_middleware_list_with_backoff_retries_does_not_warn(database_url, caplog):
    broker_module._warn_plain_retries.cache_clear()
    broker = PostgresBroker(database_url, middleware=[BackoffRetries()])
    broker.close()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("notaurl", "is not a PostgreSQL URL (notaurl)"),
        ("mysql://app:s3cret@db/app", "is a mysql:// URL"),
        ("postgresql://app:s3cret@db:port/app", "has the port 'port', not a number"),
        ("", "is empty"),
    ],
)
def test_a_malformed_url_fails_at_construction_with_a_config_error(url, words):
    from receiptq.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        PostgresBroker(url)
    message = str(caught.value)
    assert message.startswith("PostgresBroker(url=...) ") and words in message
    assert "postgresql://USER:PASSWORD@HOST:5432/DBNAME" in message
    assert "s3cret" not in message and "\n" not in message
