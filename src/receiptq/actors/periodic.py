"""Periodic maintenance actors, scheduled by ``periodiq receiptq.actors``.

- ``retention_cleanup`` (hourly, at minute 17): prunes statistics older than
  ``RECEIPTQ_STATS_RETENTION_DAYS`` (14), dead letters older than
  ``RECEIPTQ_DEAD_LETTER_RETENTION_DAYS`` (30), old tick records and expired
  rate-limit keys, in batches of ``RECEIPTQ_RETENTION_BATCH_SIZE`` (1000).
- ``dead_letter_report`` (hourly, on the hour): counts the last hour's dead
  letters by actor and error and logs them; when there are some and
  ``RECEIPTQ_REPORT_USER_ID`` names a user (the app's user id), it also sends
  them with the email actor ``receiptq.actors.receipts.send_email`` and the
  template ``dead_letter_report`` (values: since, until, total, lines), when
  both exist; otherwise the report is only logged.
"""

from __future__ import annotations

import importlib
import logging
from datetime import timedelta
from typing import Any

import dramatiq

from receiptq import retention
from receiptq.broker import PostgresBroker
from receiptq.periodic import periodic_actor
from receiptq.settings import Settings

logger = logging.getLogger(__name__)

#: The queue of the maintenance jobs.
QUEUE = "maintenance"
#: The email actor the report is sent with, when it exists.
EMAIL_ACTOR = ("receiptq.actors.receipts", "send_email")
#: The email templates, and the one the report needs among them.
EMAIL_TEMPLATES = ("receiptq.services.email_templates", "TEMPLATES")
REPORT_TEMPLATE = "dead_letter_report"


def _broker() -> PostgresBroker:
    broker = dramatiq.get_broker()
    if not isinstance(broker, PostgresBroker):
        raise RuntimeError("the periodic maintenance actors need a PostgresBroker")
    return broker


@periodic_actor("17 * * * *", queue_name=QUEUE, max_retries=3)
def retention_cleanup() -> dict[str, int]:
    """Delete history older than the retention policy; returns rows deleted per table."""
    policy = retention.RetentionPolicy.from_env()
    with _broker().connection() as conn:
        pruned = retention.prune(conn, policy).as_dict()
    logger.info("retention cleanup deleted %s", pruned)
    return pruned


def _optional(module_name: str, attribute: str) -> Any | None:
    """``module.attribute``, or None when the module (or the attribute) does not exist."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # the module exists but one of its own imports is missing
        return None
    return getattr(module, attribute, None)


def _email_actor() -> Any | None:
    """The email actor, when it and its ``dead_letter_report`` template both exist."""
    send_email = _optional(*EMAIL_ACTOR)
    templates = _optional(*EMAIL_TEMPLATES)
    if send_email is None or not isinstance(templates, dict) or REPORT_TEMPLATE not in templates:
        return None
    return send_email


def email_context(report: dict[str, Any]) -> dict[str, Any]:
    """The report as flat template values: since, until, total, and one line per count."""
    lines = [f"{r['dead']:>6}  {r['actor']}  ({r['error']})" for r in report["counts"]]
    return {
        "since": report["since"],
        "until": report["until"],
        "total": report["total"],
        "lines": "\n".join(lines),
    }


@periodic_actor("0 * * * *", queue_name=QUEUE, max_retries=3)
def dead_letter_report() -> dict[str, Any]:
    """Count the last hour's dead letters by actor and error; log them, and email them."""
    with _broker().connection() as conn:
        report = retention.dead_letter_counts(conn, window=timedelta(hours=1))
    for row in report["counts"]:
        logger.warning(
            "dead letters in the last hour: %d of %s (%s)", row["dead"], row["actor"], row["error"]
        )
    logger.info("dead letters in the last hour: %d", report["total"])
    recipient = Settings.from_env().report_user_id
    if report["total"] and recipient:
        send_email = _email_actor()
        if send_email is None:
            logger.info(
                "no email actor %s.%s with a %r template: the report is only logged",
                *EMAIL_ACTOR,
                REPORT_TEMPLATE,
            )
        else:
            send_email.send(recipient, REPORT_TEMPLATE, email_context(report))
            report["emailed_to"] = recipient
    return report
