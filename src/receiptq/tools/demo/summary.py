"""The demo's summary: the outcome checked against the generated truth, every count
from what the run submitted."""

from __future__ import annotations

import sys
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from receiptq.services import receipts
from receiptq.stats import histogram_percentile
from receiptq.tools.demo import database as place
from receiptq.tools.demo.database import QUEUES
from receiptq.tools.demo.figures import Totals
from receiptq.tools.demo.view import Run
from receiptq.tools.demo.world import Upload


def check_truth(conn: psycopg.Connection[Any], uploads: list[Upload]) -> dict[str, int]:
    """How the pipeline's outcome compares with the generated truth."""
    result = {"matched_correctly": 0, "unmatched_correctly": 0, "failed_correctly": 0, "wrong": 0}
    for upload in uploads:
        got = receipts.get_receipt(conn, upload.receipt_id)
        if got["status"] in ("uploaded", "read"):
            continue  # stuck (counted as such) or still in flight: not an outcome
        if upload.expected == "failed":
            ok = got["status"] == "failed"
            key = "failed_correctly"
        elif upload.expected == "unmatched":
            ok = got["status"] in ("unmatched", "notified") and got["transaction_id"] is None
            key = "unmatched_correctly"
        else:
            ok = got["transaction_id"] == upload.transaction_id
            key = "matched_correctly"
        result[key if ok else "wrong"] += 1
    return result


def summarize(run: Run, emails: int, finished: bool, wall_s: float) -> dict[str, Any]:
    """The run's figures, every count from what it submitted."""
    conn, uploads = run.conn, run.uploads
    counts = run.counts()
    stuck = receipts.list_receipts(conn, stuck=True, ids=run.receipt_ids)
    jobless = sum(row["stuck"]["dead_letter_id"] is None for row in stuck)
    processed = counts["notified"] + counts["failed"]
    ocr_hist = run.per_queue().get(QUEUES[0], Totals()).run_hist
    left = run.jobs_left()
    return {
        "receipts": len(uploads),
        "processed": processed,
        "notified": counts["notified"],
        "failed": counts["failed"],
        "stuck": counts["stuck"],
        "statuses": counts,
        "expected_matched": sum(u.expected == "matched" for u in uploads),
        "expected_unmatched": sum(u.expected == "unmatched" for u in uploads),
        "expected_failed": sum(u.expected == "failed" for u in uploads),
        **check_truth(conn, uploads),
        "emails_delivered": emails,
        "jobs_retried": run.stats.total("retried") if run.stats else 0,
        "jobs_postponed": run.stats.total("postponed") if run.stats else 0,
        "dead_letters": sum(place.run_dead_letters(conn, run.run_id).values()),
        "jobs_left": left,
        # Every receipt reached the end of its pipeline, or a dead letter holds its job:
        # none in flight, none lost.
        "accounted": finished and left == 0 and jobless == 0
        and processed + counts["stuck"] == len(uploads),
        "timeout": not finished,
        "wall_s": round(wall_s, 3),
        "throughput_receipts_per_s": round(processed / wall_s, 2) if wall_s > 0 else None,
        "ocr_p50_ms": _round(histogram_percentile(ocr_hist, 0.50)),
        "ocr_p95_ms": _round(histogram_percentile(ocr_hist, 0.95)),
    }  # fmt: skip


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def print_summary(summary: dict[str, Any]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} ms"

    table = Table(title="receiptq demo", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    rows = [
        ("receipts", str(summary["receipts"])),
        ("processed (notified or failed)", str(summary["processed"])),
        ("matched correctly", f"{summary['matched_correctly']} of {summary['expected_matched']}"),
        ("unmatched correctly (no transaction)",
         f"{summary['unmatched_correctly']} of {summary['expected_unmatched']}"),
        ("failed correctly (not an image)",
         f"{summary['failed_correctly']} of {summary['expected_failed']}"),
        ("wrong outcome", str(summary["wrong"])),
        ("stuck (a dead letter, or no job left)", str(summary["stuck"])),
        ("by status", ", ".join(f"{n} {s}" for s, n in summary["statuses"].items() if n)),
        ("emails delivered", str(summary["emails_delivered"])),
        ("jobs retried", str(summary["jobs_retried"])),
        ("jobs postponed (circuit breaker open)", str(summary["jobs_postponed"])),
        ("dead letters", str(summary["dead_letters"])),
        ("wall time (workers started → all done)", f"{summary['wall_s']:.2f} s"),
        ("throughput", f"{summary['throughput_receipts_per_s']} receipts/s"),
        ("OCR run time p50 / p95", f"{ms(summary['ocr_p50_ms'])} / {ms(summary['ocr_p95_ms'])}"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    console = Console()
    console.print()
    console.print(table)
    if summary["accounted"]:
        console.print("[green]every receipt was accounted for[/green]")
    else:
        why = "timed out" if summary["timeout"] else "counts do not add up"
        console.print(f"[red]not every receipt was accounted for ({why})[/red]")
        print(
            "see `receiptq receipts list --stuck` and `receiptq dead-letter list`", file=sys.stderr
        )
