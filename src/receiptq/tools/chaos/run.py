"""The chaos run: real ``dramatiq`` workers SIGKILLed again and again, and PostgreSQL
restarted under them, on a server of the run's own (never a shared one).

``python -m receiptq.tools.chaos`` (see ``--help``) starts a throw-away PostgreSQL
(:class:`receiptq.scratch_pg.ScratchServer`), queues N jobs of 1-20 ms (4 % of
them 200 ms, :mod:`receiptq.tools.chaos.worker`), and runs several ``dramatiq``
invocations on them, restarting any that exit as a PaaS restarts a crashed dyno. Every few seconds
it SIGKILLs one worker process (Dramatiq then stops the rest of that invocation
gracefully) or a whole invocation's process group; at set points of the drain it
restarts PostgreSQL (``-m fast``, ``-m immediate``). Workers are never restarted for
a database restart. It reports, as one JSON line and a table:

  lost               jobs that never ran to their end once the queue is empty
  dead_lettered      jobs in the dead letters (a lost worker must not kill a job)
  deadlocks          "deadlock detected" lines in the server's log
  most_held / prefetch  the most jobs a worker process said it held (its heartbeat's
                     in_flight), against its prefetch (Dramatiq's: 2 x threads)
  kill_to_rerun_s    for each job a killed process held, from the kill to the start
                     of the job's next run: p50 / p95 / max (a job at the head of the
                     line should run again within lease + rescue interval + a little);
                     a job killed again before it ran (the worker that rescued it died
                     too) is counted apart, as killed_again
  recovery_s         after each database restart, until the first job started again

The test suite runs a small one (tests/processes/test_chaos.py); the README's figures come
from a large one.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from dramatiq.message import Message

from receiptq import db, processes
from receiptq.broker import PostgresBroker
from receiptq.scratch_pg import ScratchServer
from receiptq.stats import percentile
from receiptq.tools.scratch import recreate_database

#: The chaos worker's module, queue and actor (importing receiptq.tools.chaos.worker
#: here would set up a broker from the environment).
WORKER_MODULE = "receiptq.tools.chaos.worker"
QUEUE = "chaos"
ACTOR = "chaos_job"
DATABASE = "receiptq_chaos"
ENQUEUE_CHUNK = 1000
POLL_S = 0.2
STOP_GRACE_S = 15.0


@dataclass(frozen=True)
class ChaosSettings:
    jobs: int = 100_000
    invocations: int = 3
    processes: int = 1
    threads: int = 4
    lease_s: float = 10.0
    kill_every_s: tuple[float, float] = (2.0, 5.0)
    min_kills: int = 0  # kills at evenly spaced points of the drain, besides the timed ones
    restarts: tuple[str, ...] = ("fast", "immediate")
    outage_s: float = 3.0  # how long the database stays down at each restart
    long_share: float = 0.04
    long_ms: float = 200.0
    short_ms: tuple[float, float] = (1.0, 20.0)
    seed: int = 1
    timeout_s: float = 3600.0

    @property
    def prefetch(self) -> int:
        return self.threads * 2  # Dramatiq's


@dataclass
class Kill:
    at: float
    pids: list[int]
    group: bool
    held: list[int]


@dataclass
class Outcome:
    settings: ChaosSettings
    finished: bool = False
    wall_s: float = 0.0
    done: int = 0
    lost: int = 0
    dead_lettered: int = 0
    deadlocks: int = 0
    most_held: int = 0
    kills: list[Kill] = field(default_factory=list)
    kill_to_rerun_s: list[float] = field(default_factory=list)
    killed_again: int = 0  # held jobs killed again before they ran (not in kill_to_rerun_s)
    recovery_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        waits = sorted(self.kill_to_rerun_s)
        return {
            "workload": "chaos",
            "finished": self.finished,
            "jobs": self.settings.jobs,
            "done": self.done,
            "lost": self.lost,
            "dead_lettered": self.dead_lettered,
            "deadlocks": self.deadlocks,
            "most_held": self.most_held,
            "prefetch": self.settings.prefetch,
            "kills": len(self.kills),
            "group_kills": sum(k.group for k in self.kills),
            "restarts": list(self.settings.restarts),
            "kill_to_rerun_s": {
                "jobs": len(waits),
                "p50": _round(percentile(waits, 0.5)),
                "p95": _round(percentile(waits, 0.95)),
                "max": _round(waits[-1] if waits else None),
                "killed_again": self.killed_again,
            },
            "recovery_s": [_round(r) for r in self.recovery_s],
            "wall_s": _round(self.wall_s),
            "settings": {k: v for k, v in asdict(self.settings).items() if k != "timeout_s"},
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def job_messages(settings: ChaosSettings) -> list[Message[Any]]:
    """The run's jobs: job_no and how long each works (ms), from the seed."""
    rng = random.Random(settings.seed)
    messages: list[Message[Any]] = []
    for job_no in range(settings.jobs):
        ms = (
            settings.long_ms
            if rng.random() < settings.long_share
            else rng.uniform(*settings.short_ms)
        )
        messages.append(
            Message(queue_name=QUEUE, actor_name=ACTOR, args=(job_no, ms), kwargs={}, options={})
        )
    return messages


class ChaosRun:
    """One chaos run on ``server`` (started, and restarted by the run); ``run()``."""

    def __init__(self, settings: ChaosSettings, server: ScratchServer, log_dir: Path) -> None:
        self.settings = settings
        self.server = server
        self.log_dir = log_dir
        self.rng = random.Random(settings.seed + 1)
        self.url = ""
        self.outcome = Outcome(settings)
        self._conn: psycopg.Connection[Any] | None = None
        self._invocations: list[subprocess.Popen[bytes]] = []
        self._started = 0

    # -- the database, as the run sees it (it goes away and comes back) ---------------

    def _query(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a named query; [] while the database does not answer."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = db.connect(self.url, connect_timeout=2)
            return db.fetch_all(self._conn, name, params)
        except psycopg.OperationalError:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return []

    def _setup(self) -> None:
        self.url = recreate_database(self.server.url(), DATABASE)
        db.migrate(self.url)
        with db.connect(self.url) as conn:
            db.execute(conn, "chaos_setup")
        broker = PostgresBroker(self.url)
        try:
            broker.declare_queue(QUEUE)
            messages = job_messages(self.settings)
            for start in range(0, len(messages), ENQUEUE_CHUNK):
                broker.enqueue_many(messages[start : start + ENQUEUE_CHUNK])
        finally:
            broker.close()

    # -- workers ----------------------------------------------------------------------

    def _start_invocation(self) -> subprocess.Popen[bytes]:
        self._started += 1
        return processes.start_dramatiq(
            WORKER_MODULE,
            self.url,
            processes=self.settings.processes,
            threads=self.settings.threads,
            queues=[QUEUE],
            log_path=self.log_dir / f"dramatiq-{self._started}.log",
            env={"RECEIPTQ_LEASE_S": str(self.settings.lease_s)},
        )

    def _supervise(self) -> None:
        """Start a new invocation for each that exited (a PaaS restarts a crashed dyno)."""
        for i, proc in enumerate(self._invocations):
            if proc.poll() is not None:
                processes.kill_group(proc.pid)
                self._invocations[i] = self._start_invocation()

    def _kill_one(self) -> bool:
        """SIGKILL one worker process, or a whole invocation, noting the jobs it held.
        Only while another invocation runs (as one dyno of several crashes): False
        when none was killed."""
        running = {proc.pid: processes.children(proc.pid) for proc in self._invocations}
        up = [pid for pid, workers in running.items() if workers]
        if len(up) < 2:
            return False
        pgid = self.rng.choice(up)
        group = self.rng.random() < 0.5
        pids = running[pgid] if group else [self.rng.choice(running[pgid])]
        held = [r["job_no"] for r in self._query("chaos_held_by", {"pids": pids})]
        at = time.time()
        if group:
            processes.kill_group(pgid)
        else:
            processes.kill(pids[0])
        self.outcome.kills.append(Kill(at=at, pids=pids, group=group, held=held))
        return True

    def _restart_database(self, mode: str) -> float:
        """Stop the server, wait the outage, start it; when it answered again (epoch s)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.server.stop("immediate" if mode == "immediate" else "fast")
        time.sleep(self.settings.outage_s)
        self.server.start()
        return time.time()

    def _stop_all(self) -> None:
        for proc in self._invocations:
            if proc.poll() is None:
                processes.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self._invocations:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            processes.kill_group(proc.pid)

    # -- the run ----------------------------------------------------------------------

    def run(self) -> Outcome:
        s = self.settings
        self._setup()
        started = time.monotonic()
        deadline = started + s.timeout_s
        restart_at = _points(s.jobs, len(s.restarts))
        kill_at = _points(s.jobs, s.min_kills)
        restarts = list(s.restarts)
        back_at: list[float] = []
        self._invocations = [self._start_invocation() for _ in range(s.invocations)]
        next_kill = time.monotonic() + self.rng.uniform(*s.kill_every_s)
        try:
            while time.monotonic() < deadline:
                self._supervise()
                progress = self._query("chaos_progress")
                held = self._query("chaos_most_held")
                if held:
                    self.outcome.most_held = max(self.outcome.most_held, held[0]["held"])
                done = progress[0]["done"] if progress else 0
                if progress and done >= s.jobs and progress[0]["left_in_queue"] == 0:
                    self.outcome.finished = True
                    break
                if restarts and done >= restart_at[len(back_at)]:
                    back_at.append(self._restart_database(restarts.pop(0)))
                    continue
                due = kill_at and done >= kill_at[0]
                if (due or time.monotonic() >= next_kill) and self._kill_one():
                    if due:
                        kill_at.pop(0)
                    next_kill = time.monotonic() + self.rng.uniform(*s.kill_every_s)
                time.sleep(POLL_S)
        finally:
            self.outcome.wall_s = time.monotonic() - started
            self._stop_all()
        self._measure(back_at)
        return self.outcome

    def _measure(self, back_at: list[float]) -> None:
        o = self.outcome
        [progress] = self._query("chaos_progress") or [{"done": 0, "dead_lettered": 0}]
        o.done = progress["done"]
        o.lost = self.settings.jobs - o.done if o.finished else 0
        o.dead_lettered = progress["dead_lettered"]
        o.deadlocks = self.server.log_text().count("deadlock detected")
        killed_at: dict[int, list[float]] = {}
        for kill in o.kills:
            for job_no in kill.held:
                killed_at.setdefault(job_no, []).append(kill.at)
        for kill in o.kills:
            reruns = self._query("chaos_first_runs_after", {"job_nos": kill.held, "after": kill.at})
            for r in reruns:
                # A job killed again before it ran (its rescuer died too) waited for two
                # leases: that second kill's wait is not this one's.
                if not any(kill.at < at < r["started_at"] for at in killed_at[r["job_no"]]):
                    o.kill_to_rerun_s.append(r["started_at"] - kill.at)
                else:
                    o.killed_again += 1
        for at in back_at:
            [row] = self._query("chaos_first_start_after", {"after": at}) or [{"started_at": None}]
            if row["started_at"] is not None:
                o.recovery_s.append(row["started_at"] - at)
        if self._conn is not None:
            self._conn.close()


def _points(jobs: int, count: int) -> list[int]:
    """``count`` evenly spaced points of a drain of ``jobs`` (jobs done)."""
    return [jobs * (i + 1) // (count + 1) for i in range(count)]


def run_chaos(settings: ChaosSettings, log_dir: Path | None = None) -> Outcome:
    """A chaos run on a scratch server of its own, deleted afterwards."""
    log_dir = log_dir or processes.log_folder("receiptq-chaos-")
    with ScratchServer() as server:
        try:
            return ChaosRun(settings, server, log_dir).run()
        finally:
            (log_dir / "postgresql.log").write_text(server.log_text())
