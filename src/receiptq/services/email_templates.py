"""The email templates (``string.Template``: ``$name`` placeholders).

Each has a subject, a plain-text body and an HTML body; :func:`receiptq.services.email.render`
fills them (HTML-escaping the values in the HTML body).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    subject: str
    text: str
    html: str


TEMPLATES: dict[str, Template] = {
    # Sent at the end of a receipt's pipeline. Context: receipt_id, merchant,
    # purchased_on, total, currency, outcome (matched or unmatched), detail.
    "receipt_processed": Template(
        subject="Receipt #$receipt_id from $merchant: $outcome",
        text="""Hello,

your receipt #$receipt_id has been processed.

  Merchant: $merchant
  Date:     $purchased_on
  Total:    $total $currency
  Result:   $outcome ($detail)

-- receiptq
""",
        html="""<html><body>
<p>Hello,</p>
<p>your receipt <b>#$receipt_id</b> has been processed.</p>
<table>
<tr><th align="left">Merchant</th><td>$merchant</td></tr>
<tr><th align="left">Date</th><td>$purchased_on</td></tr>
<tr><th align="left">Total</th><td>$total $currency</td></tr>
<tr><th align="left">Result</th><td><b>$outcome</b> ($detail)</td></tr>
</table>
<p>&mdash; receiptq</p>
</body></html>
""",
    ),
    # The hourly dead-letter report (receiptq.actors.periodic). Context: since,
    # until, total, counts (rows of actor, error, dead).
    "dead_letter_report": Template(
        subject="receiptq: $total dead letters in the last hour",
        text="""$total jobs were dead-lettered between $since and $until.

By actor and error: $counts

See `receiptq dead-letter list`.
-- receiptq
""",
        html="""<html><body>
<p><b>$total</b> jobs were dead-lettered between $since and $until.</p>
<p>By actor and error: <code>$counts</code></p>
<p>See <code>receiptq dead-letter list</code>.</p>
</body></html>
""",
    ),
    # A plain notice. Context: message.
    "notice": Template(
        subject="receiptq: $message",
        text="$message\n\n-- receiptq\n",
        html="<html><body><p>$message</p><p>&mdash; receiptq</p></body></html>\n",
    ),
}
