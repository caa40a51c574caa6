"""Render an email from a template (plain text + HTML) and send it over SMTP.

Settings (``RECEIPTQ_SMTP_*``): ``HOST`` (localhost), ``PORT`` (25), ``TLS``
(``none``, ``starttls`` or ``ssl``; default none), ``USER`` and ``PASSWORD``
(log in when USER is set), ``FROM`` (receiptq@localhost), ``TIMEOUT_S`` (10).

Sending goes through the shared "email" circuit breaker. SMTP's own verdicts
are kept: a 5xx refusal of the recipient or the message is a
:class:`PermanentError` (retrying cannot help), a 4xx or a dropped connection
is transient.
"""

from __future__ import annotations

import html
import smtplib
import ssl
import string
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from receiptq.middleware.backoff import PermanentError
from receiptq.middleware.breakers import get_breaker
from receiptq.services.email_templates import TEMPLATES
from receiptq.services.faults import maybe_fail
from receiptq.settings import Settings


class UnknownTemplate(PermanentError):
    """No template has this name."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "localhost"
    port: int = 25
    tls: str = "none"
    user: str | None = None
    password: str | None = None
    sender: str = "receiptq@localhost"
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, settings: Settings | None = None) -> SmtpSettings:
        """The ``smtp_*`` of ``settings`` (default: the environment's ``RECEIPTQ_SMTP_*``)."""
        settings = settings or Settings.from_env()
        port = settings.smtp_port
        return cls(
            host=settings.smtp_host,
            port=port if port is not None else 465 if settings.smtp_tls == "ssl" else 25,
            tls=settings.smtp_tls,
            user=settings.smtp_user,
            password=settings.smtp_password,
            sender=settings.smtp_from,
            timeout_s=settings.smtp_timeout_s,
        )


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def render(template: str, context: dict[str, Any]) -> RenderedEmail:
    """Fill a template's subject, text and HTML parts (HTML-escaped values in the HTML).

    Raises:
      UnknownTemplate: no such template.
      PermanentError: the context lacks a value the template uses.
    """
    parts = TEMPLATES.get(template)
    if parts is None:
        raise UnknownTemplate(f"no email template {template!r}")
    plain = {key: "" if value is None else str(value) for key, value in context.items()}
    escaped = {key: html.escape(value) for key, value in plain.items()}
    try:
        return RenderedEmail(
            subject=string.Template(parts.subject).substitute(plain),
            text=string.Template(parts.text).substitute(plain),
            html=string.Template(parts.html).substitute(escaped),
        )
    except KeyError as exc:
        raise PermanentError(f"email template {template!r} needs {exc.args[0]!r}") from None


def build_message(sender: str, recipient: str, email: RenderedEmail) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = email.subject
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message


def _deliver(settings: SmtpSettings, message: EmailMessage) -> None:
    maybe_fail("email")
    smtp: smtplib.SMTP
    if settings.tls == "ssl":
        smtp = smtplib.SMTP_SSL(
            settings.host,
            settings.port,
            timeout=settings.timeout_s,
            context=ssl.create_default_context(),
        )
    else:
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
    with smtp:
        if settings.tls == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if settings.user:
            smtp.login(settings.user, settings.password or "")
        smtp.send_message(message)


def send(
    recipient: str, email: RenderedEmail, settings: SmtpSettings | None = None
) -> EmailMessage:
    """Send one rendered email through the "email" breaker; return what was sent.

    Raises:
      PermanentError: the server refused the recipient or the message for good (5xx).
    """
    settings = settings or SmtpSettings.from_env()
    message = build_message(settings.sender, recipient, email)
    try:
        get_breaker("email").call(_deliver, settings, message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        if all(code >= 500 for code in codes):
            raise PermanentError(f"the mail server refused {recipient}: {exc.recipients}") from None
        raise
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code >= 500 and not isinstance(exc, smtplib.SMTPAuthenticationError):
            raise PermanentError(
                f"the mail server refused the message: {exc.smtp_code} {exc.smtp_error!r}"
            ) from None
        raise
    return message
