"""The peers' drain and steady workloads on dramatiq-pg 0.12, for the migration guide.

Run it with the Python of dramatiq-pg's own virtual environment (README.md), on
the same machine and PostgreSQL server as ``receiptq bench``, one right after the
other::

    /tmp/dpg-venv/bin/python tools/dramatiq_pg/bench_dramatiq_pg.py \
        --url postgresql://postgres@127.0.0.1:5432/postgres

Workloads (as ../../../shared/peers/bench.py and ``receiptq bench``; each on a fresh
database ``--database``, dropped and created on the URL's server, with dramatiq-pg's
own schema from ``dramatiq_pg.schema.generate_init_sql``):

  drain   Send N no-op jobs (``actor.send``, one per job: dramatiq-pg has no batch
          send), then start the real ``dramatiq`` CLI (2 processes x 8 threads) and
          time from the first worker process's ``before_worker_boot`` until the last
          job has run. While it drains, every 0.5 s: jobs done, advisory locks held
          (dramatiq-pg takes one per message it consumes and releases them only when
          its consumer runs out of notifications), all locks in pg_locks, and whether
          another session can take a lock (samples: [s, done, advisory, locks, ok]). A drain
          that makes no progress for ``--stall-s`` seconds is stopped and reported as
          stalled; the worker log's "out of shared memory" errors are counted.
  steady  Workers run; after 20 warm-up jobs, a producer in a process of its own
          sends batches of 10 jobs for T seconds. Jobs done in the window per second,
          the producer's rate, the enqueue-to-start latency (p50, p99, nearest rank).

A job is done when its function has run; the actor records that, and its latency,
in Redis (as the peers' dramatiq-redis app), under keys of this run's own prefix.
The lock-table figures affect the whole server: run the 20,000-job drain on a
PostgreSQL of your own, not on one that others share.

Output: one JSON line per workload (the peers' keys, peer "dramatiq-pg"), then a
table (left out with --json-only). Progress on stderr.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg2
import redis

HERE = Path(__file__).resolve().parent
LOG = Path(tempfile.gettempdir()) / "dpg-bench-dramatiq.log"
PROCESSES, THREADS = 2, 8
WARMUP_JOBS = 20
STEADY_BATCH = 10
POLL_S = 0.02
SAMPLE_S = 0.5
STOP_TIMEOUT_S = 10
DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def database_url(server_url: str, name: str) -> str:
    return urlunparse(urlparse(server_url)._replace(path=f"/{name}"))


def recreate_database(server_url: str, name: str) -> str:
    """A fresh database with dramatiq-pg's schema; its URL."""
    from dramatiq_pg.schema import generate_init_sql

    admin = psycopg2.connect(database_url(server_url, "postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    url = database_url(server_url, name)
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(generate_init_sql())
    conn.close()
    return url


class DramatiqPg:
    """dramatiq-pg with the real ``dramatiq`` CLI as its consumers."""

    def __init__(self, url: str, redis_url: str) -> None:
        self.url = url
        self.prefix = f"dpg-bench:{os.getpid()}:{time.time_ns()}"
        os.environ.update(
            DRAMATIQ_PG_URL=url, DPG_BENCH_REDIS_URL=redis_url, DPG_BENCH_PREFIX=self.prefix
        )
        sys.path.insert(0, str(HERE))
        import bench_app  # sets dramatiq's global broker from the environment above

        self.app = bench_app
        self.redis = redis.Redis.from_url(redis_url)
        self.process: subprocess.Popen[bytes] | None = None

    def send(self, count: int) -> None:
        for _ in range(count):
            self.app.noop.send(time.time())

    def start_workers(self) -> float:
        """Start the workers; the time the first one booted."""
        command = [sys.executable, "-m", "dramatiq", "bench_app",
                   "--processes", str(PROCESSES), "--threads", str(THREADS)]  # fmt: skip
        with open(LOG, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=HERE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        while (boot := self.redis.get(self.app.BOOT_KEY)) is None:
            self.check_workers()
            time.sleep(POLL_S)
        return float(boot)

    def check_workers(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"dramatiq exited with {self.process.returncode}, see {LOG}")

    def done(self) -> int:
        return int(self.redis.get(self.app.DONE_KEY) or 0)

    def latencies_ms(self) -> list[float]:
        return [float(v) for v in self.redis.lrange(self.app.LATENCY_KEY, 0, -1)]

    def reset(self) -> None:
        self.redis.delete(self.app.DONE_KEY, self.app.LATENCY_KEY)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.redis.delete(self.app.BOOT_KEY, self.app.DONE_KEY, self.app.LATENCY_KEY)


def lock_counts(cur) -> tuple[int, int]:
    cur.execute("SELECT count(*) FILTER (WHERE locktype = 'advisory'), count(*) FROM pg_locks")
    return cur.fetchone()


def another_session_can_lock(cur) -> bool:
    """Can a session that is not dramatiq-pg's take a lock now? (A transaction-level
    advisory lock, as ``receiptq db migrate`` takes; any lock that is not a fast-path
    table lock needs a slot in the same shared lock table.)"""
    try:
        cur.execute("SELECT pg_try_advisory_xact_lock(20000)")
        return bool(cur.fetchone()[0])
    except psycopg2.errors.OutOfMemory:
        return False


def log_errors() -> dict[str, int]:
    text = LOG.read_text(errors="replace") if LOG.exists() else ""
    return {
        "out_of_shared_memory_errors": text.count("out of shared memory"),
        "error_lines": sum(1 for line in text.splitlines() if "] [ERROR]" in line),
    }


def run_drain(peer: DramatiqPg, jobs: int, stall_s: float, result: dict) -> None:
    start = time.perf_counter()
    for sent in range(0, jobs, 1000):
        peer.send(min(1000, jobs - sent))
        result["enqueued"] = min(jobs, sent + 1000)
    enqueue_s = time.perf_counter() - start
    result["enqueue_s"] = round(enqueue_s, 3)
    result["enqueue_jobs_per_s"] = round(jobs / enqueue_s, 1)
    started_at = peer.start_workers()
    conn = psycopg2.connect(peer.url)
    conn.autocommit = True
    samples, progress_at, last_done, next_sample = [], time.time(), -1, 0.0
    try:
        with conn.cursor() as cur:
            while True:
                done, now = peer.done(), time.time()
                result["done"] = done
                result["drain_s"] = round(now - started_at, 3)
                result["drain_jobs_per_s"] = round(done / (now - started_at), 1)
                if done > last_done:
                    progress_at, last_done = now, done
                if now >= next_sample:
                    advisory, locks = lock_counts(cur)
                    can_lock = another_session_can_lock(cur)
                    samples.append((round(now - started_at, 1), done, advisory, locks, can_lock))
                    next_sample = now + SAMPLE_S
                if done >= jobs:
                    break
                if now - progress_at > stall_s:
                    result["stalled"] = True
                    break
                peer.check_workers()
                time.sleep(POLL_S)
    finally:
        conn.close()
        result["advisory_locks_peak"] = max((s[2] for s in samples), default=0)
        result["locks_peak"] = max((s[3] for s in samples), default=0)
        refused = [s for s in samples if not s[4]]
        result["other_session_lock_refused_samples"] = len(refused)
        result["other_session_lock_first_refused_s"] = refused[0][0] if refused else None
        result["samples"] = samples
        result.update(log_errors())


def run_steady(peer: DramatiqPg, seconds: float, result: dict) -> None:
    peer.start_workers()
    peer.send(WARMUP_JOBS)
    while peer.done() < WARMUP_JOBS:
        peer.check_workers()
        time.sleep(POLL_S)
    peer.reset()
    producer = subprocess.Popen(
        [sys.executable, __file__, "--produce", "--seconds", str(seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        if producer.stdout.readline().strip() != "ready":
            raise RuntimeError("the producer did not start")
        start = time.monotonic()
        producer.stdin.write("go\n")
        producer.stdin.flush()
        while time.monotonic() - start < seconds:
            time.sleep(0.25)
            peer.check_workers()
        completed, window_s = peer.done(), time.monotonic() - start
        latencies = peer.latencies_ms()
        enqueued = json.loads(producer.stdout.readline())["enqueued"]
        producer.wait(STOP_TIMEOUT_S)
    finally:
        if producer.poll() is None:
            os.killpg(producer.pid, signal.SIGKILL)
    result.update(
        enqueued=enqueued,
        enqueue_jobs_per_s=round(enqueued / seconds, 1),
        completed=completed,
        completed_jobs_per_s=round(completed / window_s, 1),
        latency_samples=len(latencies),
        latency_p50_ms=percentile(latencies, 0.50),
        latency_p99_ms=percentile(latencies, 0.99),
        backlog_at_end=max(0, enqueued - completed),
    )
    result.update(log_errors())


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(1, math.ceil(fraction * len(ordered))) - 1], 2)


def run_one(workload: str, args: argparse.Namespace) -> dict:
    result: dict = {"peer": "dramatiq-pg", "workload": workload}
    result["version"] = (
        f"dramatiq-pg {importlib.metadata.version('dramatiq-pg')}, dramatiq "
        f"{importlib.metadata.version('dramatiq')}, psycopg2 {importlib.metadata.version('psycopg2-binary')}"
    )
    result["consumers"] = (
        f"dramatiq CLI --processes {PROCESSES} --threads {THREADS}, sync no-op actor"
    )
    result["jobs" if workload == "drain" else "seconds"] = (
        args.jobs if workload == "drain" else args.seconds
    )
    peer = None

    def timeout(signum, frame):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(int(args.timeout))
    try:
        peer = DramatiqPg(recreate_database(args.url, args.database), args.redis_url)
        if workload == "drain":
            run_drain(peer, args.jobs, args.stall_s, result)
        else:
            run_steady(peer, args.seconds, result)
        result["timeout"] = False
    except TimeoutError:
        result["timeout"] = True
    except Exception as exc:  # reported in the JSON line, as the peers do
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        if peer is not None:
            peer.close()
    return result


def produce(seconds: float) -> None:
    peer = DramatiqPg(os.environ["DRAMATIQ_PG_URL"], os.environ["DPG_BENCH_REDIS_URL"])
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    enqueued, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        peer.send(STEADY_BATCH)
        enqueued += STEADY_BATCH
    print(json.dumps({"enqueued": enqueued}), flush=True)


def print_table(results: list[dict]) -> None:
    print()
    print("workload  jobs    enqueue/s  done/s   p50 ms   p99 ms   note")
    for r in results:
        jobs = r.get("done") if r["workload"] == "drain" else r.get("completed")
        rate = (
            r.get("drain_jobs_per_s") if r["workload"] == "drain" else r.get("completed_jobs_per_s")
        )
        note = " ".join(
            f"{key}={r[key]}"
            for key in ("stalled", "timeout", "error", "backlog_at_end", "advisory_locks_peak",
                        "out_of_shared_memory_errors")
            if r.get(key)
        )  # fmt: skip
        print(f"{r['workload']:<9} {jobs!s:<7} {r.get('enqueue_jobs_per_s')!s:<10} {rate!s:<8} "
              f"{r.get('latency_p50_ms')!s:<8} {r.get('latency_p99_ms')!s:<8} {note}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL server URL")  # fmt: skip
    parser.add_argument("--database", default="dpg_bench", help="dropped and created")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--workload", default="drain,steady")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--timeout", type=float, default=300, help="per workload (s)")
    parser.add_argument("--stall-s", type=float, default=20, help="no progress this long: stalled")
    parser.add_argument("--json-only", action="store_true")
    parser.add_argument("--produce", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # one workload, in a fresh process
    args = parser.parse_args()
    if args.produce:
        produce(args.seconds)
        return
    if not DATABASE_NAME.match(args.database):
        parser.error(f"invalid database name {args.database!r}")
    if args.one:
        print(json.dumps(run_one(args.one, args)), flush=True)
        return
    results = []
    for workload in [w.strip() for w in args.workload.split(",") if w.strip()]:
        if not args.json_only:
            print(f"[dramatiq-pg] {workload} ...", file=sys.stderr, flush=True)
        # A process per workload: dramatiq's global broker is set once per process.
        argv = ["--url", args.url, "--database", args.database, "--redis-url", args.redis_url,
                "--jobs", str(args.jobs), "--seconds", str(args.seconds),
                "--timeout", str(args.timeout), "--stall-s", str(args.stall_s)]  # fmt: skip
        done = subprocess.run([sys.executable, __file__, *argv, "--one", workload],
                              stdout=subprocess.PIPE, text=True, check=False)  # fmt: skip
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(result), flush=True)
        results.append(result)
    if not args.json_only:
        print_table(results)


if __name__ == "__main__":
    main()
