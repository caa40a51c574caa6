"""The soak: a steady load for an hour on real ``dramatiq`` workers, sampling the
footprint that must stay flat.

``python -m receiptq.tools.soak`` (see ``--help``) starts a throw-away PostgreSQL with the
default settings (:class:`receiptq.scratch_pg.ScratchServer`; or, with ``--server
URL``, uses that server), creates a database of its own there (named ``soak_*``,
dropped at the end unless ``--keep``), migrates it, starts one ``dramatiq
receiptq.soak_worker`` invocation of 2 processes, and for ``--minutes`` (60) sends
``--rate`` (40) jobs a second of 1-20 ms, a mix that exercises every table the
workers write (:mod:`receiptq.tools.soak.worker`):

  68 %  plain jobs (results kept, 10-minute TTL)
  15 %  with a user_id and a tier (free, pro, enterprise)
   8 %  delayed 1-30 s
   5 %  holding a PostgreSQL rate-limiter slot
   3 %  failing once, then succeeding on the retry
   1 %  always failing: dead-lettered after one retry

Every ``--retention-s`` (300) it runs what the hourly ``retention_cleanup`` job runs
(:func:`receiptq.retention.prune`, policy from the environment) and the dead-letter
count of ``dead_letter_report``.

Every ``--sample-s`` (30) it writes one JSON line (``samples.jsonl`` in ``--out``):
each worker process's RSS, each receiptq table's total size and live/dead tuples,
the statistics and dead-letter rows, connections to the database, the claimable
backlog and the jobs done. At the end it writes ``soak.png`` (the series against
time) and ``summary.json``, and prints the summary table.

The verdict per series, over the samples after the warm-up (``--warmup-minutes``,
12, at most half the run: the results table fills up to its TTL, pools open):
the mean of the last quarter of those samples against the mean of the first. A
*level* series (RSS, sizes, tuples, connections, backlog) "grows" when the last
quarter's mean exceeds the first's by more than 10 % and by more than the series'
floor (2 MB of RSS, 1 MiB, 500 tuples or rows, 2 connections, 200 jobs of backlog);
otherwise it is "flat". A *cumulative* series (statistics and dead-letter rows,
which retention prunes only after days) is judged on its rate per minute the same
way: it "grows" when it accumulates faster and faster.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from statistics import fmean
from typing import Any

import psutil
from dramatiq.message import Message
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from receiptq import db, processes, retention
from receiptq.broker import PostgresBroker
from receiptq.scratch_pg import ScratchServer
from receiptq.tools.scratch import drop_database, recreate_database

WORKER_MODULE = "receiptq.tools.soak.worker"
QUEUE = "soak"
TIERS = ("free", "pro", "enterprise")
MB = 1024 * 1024


@dataclass(frozen=True)
class SoakSettings:
    minutes: float = 60.0
    rate: float = 40.0
    sample_s: float = 30.0
    retention_s: float = 300.0
    warmup_minutes: float = 12.0
    processes: int = 2
    threads: int = 3
    database: str = "soak_receiptq"
    seed: int = 1


# -- the load -------------------------------------------------------------------------


class Producer:
    """Sends ``rate`` jobs a second through ``broker`` in a thread of its own, until
    stopped (the actors are the worker's, by name: :mod:`receiptq.tools.soak.worker`)."""

    def __init__(self, broker: PostgresBroker, rate: float, seed: int) -> None:
        self.broker = broker
        self.rate = rate
        self.rng = random.Random(seed)
        self.sent = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-producer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        tick_s = 0.25
        due = time.monotonic()
        owed = 0.0
        while not self._stop.is_set():
            owed += self.rate * tick_s
            while owed >= 1:
                owed -= 1
                try:
                    self.send_one()
                    self.sent += 1
                except Exception as exc:  # a sampled figure, not a crash of the soak
                    self.errors += 1
                    print(f"soak: a send failed: {exc}", file=sys.stderr, flush=True)
            due += tick_s
            self._stop.wait(max(0.0, due - time.monotonic()))

    def _send(self, actor: str, *args: Any, delay: int | None = None, **options: Any) -> None:
        message: Message[Any] = Message(
            queue_name=QUEUE, actor_name=actor, args=args, kwargs={}, options=options
        )
        self.broker.enqueue(message, delay=delay)

    def send_one(self) -> None:
        rng = self.rng
        ms = rng.uniform(1.0, 20.0)
        roll = rng.random()
        if roll < 0.15:
            user = rng.randrange(200)
            self._send("soak_job", ms, user_id=f"user-{user}", tier=TIERS[user % len(TIERS)])
        elif roll < 0.23:
            self._send("soak_job", ms, delay=rng.randrange(1000, 30_000))
        elif roll < 0.28:
            self._send("soak_job", ms, True)
        elif roll < 0.31:
            self._send("soak_flaky", ms)
        elif roll < 0.32:
            self._send("soak_fail", ms)
        else:
            self._send("soak_job", ms)


# -- samples --------------------------------------------------------------------------


def worker_rss(invocation_pid: int) -> dict[str, float]:
    """RSS (MB) of each worker process of a dramatiq invocation, by its pid."""
    try:
        children = psutil.Process(invocation_pid).children()
    except psutil.NoSuchProcess:
        return {}
    rss: dict[str, float] = {}
    for child in children:
        try:
            rss[str(child.pid)] = round(child.memory_info().rss / MB, 2)
        except psutil.NoSuchProcess:
            continue
    return rss


def sample(url: str, t0: float, invocation_pid: int, producer: Producer) -> dict[str, Any]:
    with db.connect(url) as conn:
        tables = {r.pop("table_name"): r for r in db.fetch_all(conn, "soak_tables")}
        counts = db.fetch_one(conn, "soak_counts") or {}
    return {
        "t_s": round(time.time() - t0, 1),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rss_mb": worker_rss(invocation_pid),
        "tables": tables,
        **counts,
        "sent": producer.sent,
        "send_errors": producer.errors,
    }


# -- the verdict ----------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    name: str
    unit: str
    floor: float
    cumulative: bool = False


def series_of(samples: list[dict[str, Any]]) -> dict[Series, list[tuple[float, float]]]:
    """Each measured series as (minutes, value) points."""
    out: dict[Series, list[tuple[float, float]]] = {}

    def add(series: Series, t_s: float, value: float | None) -> None:
        if value is not None:
            out.setdefault(series, []).append((t_s / 60, float(value)))

    pids = sorted({pid for s in samples for pid in s["rss_mb"]}, key=int)
    for s in samples:
        t = s["t_s"]
        for i, pid in enumerate(pids, 1):
            add(Series(f"worker {i} RSS", "MB", 2.0), t, s["rss_mb"].get(pid))
        for table, row in sorted(s["tables"].items()):
            cumulative = table in ("stats_minute", "dead_letters")
            add(Series(f"{table} size", "MiB", 1.0, cumulative), t, row["bytes"] / MB)
            add(Series(f"{table} dead tuples", "tuples", 500), t, row["dead"])
            if table in ("jobs", "results", "rate_limits", "workers"):
                add(Series(f"{table} live tuples", "tuples", 500), t, row["live"])
        add(Series("stats_minute rows", "rows", 500, True), t, s["stats_rows"])
        add(Series("dead_letters rows", "rows", 500, True), t, s["dead_letters"])
        add(Series("connections", "conns", 2), t, s["connections"])
        add(Series("backlog", "jobs", 200), t, s["backlog"])
        add(Series("jobs done", "jobs", 0, True), t, s["succeeded"])
    return out


def _rates(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Per-minute increments between consecutive points."""
    return [
        (t2, (v2 - v1) / (t2 - t1))
        for (t1, v1), (t2, v2) in zip(points, points[1:], strict=False)
        if t2 > t1
    ]


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope, per hour."""
    if len(points) < 2:
        return 0.0
    mt = fmean(t for t, _ in points)
    mv = fmean(v for _, v in points)
    var = sum((t - mt) ** 2 for t, _ in points)
    if not var:
        return 0.0
    return sum((t - mt) * (v - mv) for t, v in points) / var * 60


def judge(series: Series, points: list[tuple[float, float]], warmup_min: float) -> dict[str, Any]:
    """start/end/max, first- and last-quarter means after the warm-up, slope, verdict."""
    values = [v for _, v in points]
    judged = [(t, v) for t, v in points if t >= warmup_min]
    if series.cumulative:
        judged = _rates(judged)
    quarter = max(1, len(judged) // 4)
    first = fmean(v for _, v in judged[:quarter]) if judged else 0.0
    last = fmean(v for _, v in judged[-quarter:]) if judged else 0.0
    grows = last - first > max(0.10 * abs(first), series.floor)
    return {
        "series": series.name,
        "unit": series.unit + ("/min" if series.cumulative else ""),
        "judged_on": "rate" if series.cumulative else "level",
        "start": round(values[0], 2) if values else None,
        "end": round(values[-1], 2) if values else None,
        "max": round(max(values), 2) if values else None,
        "first_quarter": round(first, 2),
        "last_quarter": round(last, 2),
        "ratio": round(last / first, 3) if first else None,
        "slope_per_h": round(_slope(judged), 2),
        "verdict": "grows" if grows else "flat",
    }


def idle(points: list[tuple[float, float]]) -> bool:
    """A series that never moved (a table the soak does not write): left out of the
    table and the plot."""
    return len({v for _, v in points}) <= 1


def summarize(samples: list[dict[str, Any]], warmup_minutes: float) -> list[dict[str, Any]]:
    span_min = samples[-1]["t_s"] / 60 if samples else 0.0
    warmup = min(warmup_minutes, span_min / 2)
    return [judge(s, pts, warmup) for s, pts in series_of(samples).items() if not idle(pts)]


def report(samples: list[dict[str, Any]], warmup_minutes: float, out: Path) -> int:
    """summary.json, the table on stdout and soak.png; 0 when every series is flat."""
    rows = summarize(samples, warmup_minutes)
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    print_summary(rows)
    if len(samples) > 1:
        plot(samples, out / "soak.png")
    return 0 if all(r["verdict"] == "flat" for r in rows) else 1


def read_samples(out: Path) -> list[dict[str, Any]]:
    with open(out / "samples.jsonl") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def print_summary(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'series':<28} {'unit':<10} {'start':>10} {'end':>10} {'max':>10} "
        f"{'1st q':>10} {'last q':>10} {'slope/h':>10}  verdict"
    )
    for r in rows:
        print(
            f"{r['series']:<28} {r['unit']:<10} {r['start']:>10} {r['end']:>10} {r['max']:>10} "
            f"{r['first_quarter']:>10} {r['last_quarter']:>10} {r['slope_per_h']:>10}  "
            f"{r['verdict']}"
        )


def plot(samples: list[dict[str, Any]], path: Path) -> None:
    """The series against time, six small panels (matplotlib, from the dev extras)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_name = {s.name: pts for s, pts in series_of(samples).items() if not idle(pts)}
    panels: list[tuple[str, list[str], float]] = [
        (
            "worker RSS (MB; the y axis does not start at 0)",
            [n for n in by_name if n.endswith(" RSS")],
            1,
        ),
        ("table size (MiB)", [n for n in by_name if n.endswith(" size")], 1),
        ("dead tuples", [n for n in by_name if n.endswith("dead tuples")], 1),
        (
            "rows",
            ["jobs live tuples", "results live tuples", "stats_minute rows", "dead_letters rows"],
            1,
        ),  # fmt: skip
        ("connections / backlog", ["connections", "backlog"], 1),
        ("jobs done (thousands)", ["jobs done"], 1000),
    ]
    fig, axes = plt.subplots(3, 2, figsize=(10, 8), dpi=70, sharex=True)
    for ax, (title, names, scale) in zip(axes.flat, panels, strict=True):
        for name in names:
            pts = by_name.get(name)
            if pts:
                ax.plot([t for t, _ in pts], [v / scale for _, v in pts], label=name, lw=1)
        ax.set_title(title, fontsize=9)
        if not title.startswith("worker RSS"):
            ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=7)
        if ax.lines:
            ax.legend(fontsize=6, loc="upper left")
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("minutes", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- the run --------------------------------------------------------------------------


def database_url(server: str, name: str) -> str:
    if not name.startswith("soak_"):
        raise SystemExit(f"the soak's database must be named soak_*, not {name!r}")
    if conninfo_to_dict(server).get("dbname") == name:
        server = make_conninfo(server, dbname="postgres")
    return server


def run_on_scratch_server(settings: SoakSettings, out: Path) -> int:
    """The soak on a PostgreSQL of its own (default settings: autovacuum on), deleted after."""
    with ScratchServer() as server:
        return run(settings, server.url(), out)


def server_settings(url: str) -> dict[str, str]:
    """The server settings that decide whether dead tuples are reclaimed."""
    with db.connect(url) as conn:
        return {r["name"]: r["setting"] for r in db.fetch_all(conn, "soak_server_settings")}


def run(settings: SoakSettings, server: str, out: Path, keep: bool = False) -> int:
    out.mkdir(parents=True, exist_ok=True)
    admin = database_url(server, settings.database)
    server_conf = server_settings(admin)
    (out / "server.json").write_text(json.dumps(server_conf, indent=1) + "\n")
    if server_conf.get("autovacuum") != "on":
        print(
            "soak: autovacuum is off on this server: dead tuples are never reclaimed, so "
            "table sizes grow whatever receiptq does (run without --server for a server "
            "of the soak's own, with PostgreSQL's defaults)",
            file=sys.stderr,
            flush=True,
        )
    url = recreate_database(admin, settings.database)
    db.migrate(url)
    broker = PostgresBroker(url)
    broker.declare_queue(QUEUE)
    invocation = processes.start_dramatiq(
        WORKER_MODULE,
        url,
        processes=settings.processes,
        threads=settings.threads,
        queues=[QUEUE],
        log_path=out / "dramatiq.log",
    )
    producer = Producer(broker, settings.rate, settings.seed)
    samples: list[dict[str, Any]] = []
    t0 = time.time()
    end = t0 + settings.minutes * 60
    policy = retention.RetentionPolicy.from_env()
    next_retention = t0 + settings.retention_s
    try:
        producer.start()
        with open(out / "samples.jsonl", "w") as lines:
            next_sample = t0
            while True:
                now = time.time()
                if now >= next_retention:
                    with db.connect(url) as conn:
                        pruned = retention.prune(conn, policy).as_dict()
                        dead = retention.dead_letter_counts(conn, window=timedelta(hours=1))
                    print(f"soak: retention {pruned}, dead letters {dead['total']}", flush=True)
                    next_retention += settings.retention_s
                if now >= next_sample:
                    row = sample(url, t0, invocation.pid, producer)
                    samples.append(row)
                    lines.write(json.dumps(row, default=str) + "\n")
                    lines.flush()
                    print(
                        f"soak: {row['t_s'] / 60:5.1f} min  sent {row['sent']}  done "
                        f"{row['succeeded']}  backlog {row['backlog']}  rss {row['rss_mb']}  "
                        f"jobs {row['tables']['jobs']['bytes'] // 1024} KiB  "
                        f"conns {row['connections']}",
                        flush=True,
                    )
                    next_sample += settings.sample_s
                if now >= end:
                    break
                if invocation.poll() is not None:
                    print("soak: the dramatiq invocation exited; see dramatiq.log", flush=True)
                    break
                time.sleep(max(0.0, min(next_sample, next_retention, end) - time.time()))
    finally:
        producer.stop()
        broker.close()
        processes.stop_process(invocation)
        if not keep:
            drop_database(admin, settings.database)
    return report(samples, settings.warmup_minutes, out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m receiptq.tools.soak", description=__doc__.split("\n")[0]
    )
    d = SoakSettings()
    p.add_argument("--minutes", type=float, default=d.minutes)
    p.add_argument("--rate", type=float, default=d.rate, help="jobs sent per second")
    p.add_argument("--sample-s", type=float, default=d.sample_s)
    p.add_argument("--retention-s", type=float, default=d.retention_s)
    p.add_argument("--warmup-minutes", type=float, default=d.warmup_minutes)
    p.add_argument("--processes", type=int, default=d.processes)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--database", default=d.database, help="soak_* (created and dropped)")
    p.add_argument(
        "--server",
        default="",
        help="run on this PostgreSQL server (a URL; its database is not touched, the soak "
        "creates and drops its own) instead of a throw-away server of its own",
    )
    p.add_argument("--out", type=Path, default=Path("soak-out"), help="samples, plot, summary")
    p.add_argument("--keep", action="store_true", help="keep the soak database")
    p.add_argument(
        "--report",
        action="store_true",
        help="no run: the summary and plot again from --out's samples.jsonl",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = SoakSettings(**{f.name: getattr(args, f.name) for f in fields(SoakSettings)})
    if args.report:
        return report(read_samples(args.out), settings.warmup_minutes, args.out)
    if not args.server:
        return run_on_scratch_server(settings, args.out)
    return run(settings, args.server, args.out, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
