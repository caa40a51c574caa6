"""Emails: templates rendered to text + HTML, delivered over SMTP to a real aiosmtpd server."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator

import pytest
from aiosmtpd.smtp import AuthResult

from receiptq.config import ConfigError
from receiptq.middleware.backoff import PermanentError
from receiptq.services import email as mail
from receiptq.services import receipts
from receiptq.services.smtp_sink import SmtpSink

CONTEXT = {
    "receipt_id": 7,
    "merchant": "Cafe <Aurora> & Co",
    "purchased_on": "2026-03-14",
    "total": "4.30",
    "currency": "GBP",
    "outcome": "matched",
    "detail": "bank transaction CAFE AURORA 0231, score 0.97",
}


def _checking_logins(sink: SmtpSink):
    sink.logins = []

    def check(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"mailer" and auth_data.password == b"s3cret"
        if ok:
            sink.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    return check


@pytest.fixture
def smtp_sink(broker, monkeypatch) -> Iterator[tuple[SmtpSink, mail.SmtpSettings]]:
    """A real SMTP server on 127.0.0.1 (random port), configured through RECEIPTQ_SMTP_*."""
    sink = SmtpSink()
    port = sink.start(authenticator=_checking_logins(sink), auth_require_tls=False)
    monkeypatch.setenv("RECEIPTQ_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("RECEIPTQ_SMTP_PORT", str(port))
    monkeypatch.setenv("RECEIPTQ_SMTP_FROM", "receipts@example.test")
    yield sink, mail.SmtpSettings.from_env()
    sink.stop()


def test_templates_render_text_and_escaped_html():
    rendered = mail.render("receipt_processed", CONTEXT)
    assert rendered.subject == "Receipt #7 from Cafe <Aurora> & Co: matched"
    assert "Total:    4.30 GBP" in rendered.text
    assert "Cafe &lt;Aurora&gt; &amp; Co" in rendered.html
    assert "<Aurora>" not in rendered.html


def test_unknown_template_and_missing_value_are_permanent_errors():
    with pytest.raises(mail.UnknownTemplate):
        mail.render("no_such_template", {})
    with pytest.raises(PermanentError, match="needs 'total'"):
        mail.render("receipt_processed", {k: v for k, v in CONTEXT.items() if k != "total"})


def test_email_arrives_at_the_smtp_server_with_text_and_html_parts(smtp_sink):
    sink, settings = smtp_sink
    mail.send("ana@example.test", mail.render("receipt_processed", CONTEXT), settings)
    [(sender, recipients, message)] = sink.messages
    assert sender == "receipts@example.test"
    assert recipients == ["ana@example.test"]
    assert message["Subject"] == "Receipt #7 from Cafe <Aurora> & Co: matched"
    assert "score 0.97" in message.get_body(("plain",)).get_content()
    assert "&lt;Aurora&gt;" in message.get_body(("html",)).get_content()


def test_credentials_from_settings_log_in(smtp_sink, monkeypatch):
    sink, _ = smtp_sink
    monkeypatch.setenv("RECEIPTQ_SMTP_USER", "mailer")
    monkeypatch.setenv("RECEIPTQ_SMTP_PASSWORD", "s3cret")
    mail.send("ana@example.test", mail.render("notice", {"message": "hi"}))
    assert len(sink.messages) == 1
    assert sink.logins == ["mailer"]


def test_a_refused_recipient_is_permanent_and_a_busy_server_is_not(smtp_sink):
    sink, settings = smtp_sink
    sink.refuse["gone@example.test"] = "550 no such mailbox"
    sink.refuse["later@example.test"] = "451 try again later"
    rendered = mail.render("notice", {"message": "hi"})
    with pytest.raises(PermanentError, match="refused gone@example.test"):
        mail.send("gone@example.test", rendered, settings)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        mail.send("later@example.test", rendered, settings)
    assert sink.messages == []


def test_smtp_settings_are_validated(monkeypatch):
    monkeypatch.setenv("RECEIPTQ_SMTP_TLS", "maybe")
    with pytest.raises(ConfigError, match="RECEIPTQ_SMTP_TLS"):
        mail.SmtpSettings.from_env()
    monkeypatch.setenv("RECEIPTQ_SMTP_TLS", "ssl")
    assert mail.SmtpSettings.from_env().port == 465


def test_send_email_step_mails_once_however_often_it_runs(smtp_sink, conn):
    sink, _ = smtp_sink
    user = receipts.add_user(conn, "bo@example.test", "pro")
    context = {"message": "your export is ready"}
    assert receipts.send_email(conn, user["id"], "notice", context) is True
    assert receipts.send_email(conn, user["id"], "notice", context) is False
    assert [m[1] for m in sink.messages] == [["bo@example.test"]]
    with pytest.raises(PermanentError, match="no user"):
        receipts.send_email(conn, user["id"] + 1000, "notice", context)
