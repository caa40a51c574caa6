"""The workloads of ``receiptq bench`` (described in :mod:`receiptq.tools.bench`): each
fills its result as it goes, so that a timeout still leaves partial figures."""

from __future__ import annotations

import json
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from receiptq import db
from receiptq.broker import PostgresBroker
from receiptq.stats import percentile
from receiptq.tiers import TierPolicy
from receiptq.tools.bench.workload import (
    ACK_POLL_S,
    DRAIN_ENQUEUE_CHUNK,
    ENQUEUE_USERS,
    PEER,
    RECORD_SETTLE_S,
    STOP_TIMEOUT_S,
    USERS_NEWCOMER_GAP_S,
    USERS_NEWCOMERS,
    USERS_QUEUE,
    WARMUP_JOBS,
    Workload,
    bench_messages,
    labelled_messages,
    log,
    progress_bar,
)


def run_drain(w: Workload) -> None:
    """Fill ``w.result`` as it goes, so that a timeout still leaves partial figures."""
    jobs, result = w.settings.jobs, w.result
    w.setup()

    broker = w.broker()
    start = time.perf_counter()
    remaining = jobs
    while remaining > 0:
        chunk = min(DRAIN_ENQUEUE_CHUNK, remaining)
        broker.enqueue_many(bench_messages(chunk))
        remaining -= chunk
        result["enqueued"] = jobs - remaining
        w.check()
    enqueue_s = time.perf_counter() - start
    result["enqueue_s"] = round(enqueue_s, 3)
    result["enqueue_jobs_per_s"] = round(jobs / enqueue_s, 1)
    broker.close()  # writes its statistics; the bench process stays idle from here

    log(w.settings, f"[{PEER}] drain: {jobs} jobs enqueued, starting the workers")
    started_at = w.start_workers()

    def note(done: int) -> None:
        drain_s = time.time() - started_at
        result["done"] = done
        result["drain_s"] = round(drain_s, 3)
        result["drain_jobs_per_s"] = round(done / drain_s, 1) if drain_s > 0 else None
        progress.update(task, completed=min(done, jobs))

    with progress_bar(w.settings) as progress:
        task = progress.add_task("drain", total=jobs)
        row = w.wait_done(jobs, note)

    # "last done" is the start of the last job, as the worker recorded it.
    drain_s = float(row["last_at"]) - started_at
    result["done"] = int(row["done"])
    result["drain_s"] = round(drain_s, 3)
    result["drain_jobs_per_s"] = round(jobs / drain_s, 1)

    # When the last ack landed: the jobs table holds no job of the queue any more.
    while w.jobs_left() > 0:
        w.check()
        time.sleep(ACK_POLL_S)
    result["last_ack_s"] = round(time.time() - started_at, 3)

    # The bulk send again, with a user_id on every job (user rounds), to a queue no
    # worker consumes: the workers are idle by now.
    broker = w.broker()
    broker.declare_queue(USERS_QUEUE)
    start = time.perf_counter()
    for sent in range(0, jobs, DRAIN_ENQUEUE_CHUNK):
        chunk = min(DRAIN_ENQUEUE_CHUNK, jobs - sent)
        broker.enqueue_many(bench_messages(chunk, USERS_QUEUE, users=ENQUEUE_USERS))
        w.check()
    result["enqueue_users_jobs_per_s"] = round(jobs / (time.perf_counter() - start), 1)


def tier_mix(policy: TierPolicy, jobs: int) -> tuple[list[tuple[str, dict[str, Any]]], ...]:
    """The tiers workload's two drains as (label, message options) per job: the tiers
    in equal parts, interleaved; (a) plain, untiered with the tier's priority offset as
    the priority, labelled by that priority; (b) fair, with the tier option."""
    tiers = [policy.tiers[i % len(policy.tiers)] for i in range(jobs)]
    plain = [(str(t.priority_offset), {"priority": t.priority_offset}) for t in tiers]
    fair = [(t.name, {"tier": t.name}) for t in tiers]
    return plain, fair


def expected_shares(policy: TierPolicy) -> dict[str, float]:
    """Each tier's share of the claims while every tier has work waiting."""
    total = sum(t.weight for t in policy.tiers)
    return {t.name: round(t.weight / total, 4) for t in policy.tiers}


def drain_labelled(
    w: Workload,
    name: str,
    kinds: list[tuple[str, dict[str, Any]]],
    during: Callable[[PostgresBroker], int] | None = None,
) -> tuple[float, dict[str, dict[str, Any]]]:
    """One drain of labelled jobs on a fresh database; (jobs per s, figures per label).

    ``during`` runs once the workers started, with a broker, and returns how many
    more jobs it sent (the users workload's newcomers)."""
    jobs = len(kinds)
    w.deadline = time.monotonic() + w.settings.timeout
    conn = w.setup()
    broker = w.broker()
    for start in range(0, jobs, DRAIN_ENQUEUE_CHUNK):
        broker.enqueue_many(labelled_messages(kinds[start : start + DRAIN_ENQUEUE_CHUNK]))
        w.check()
    broker.close()
    log(w.settings, f"[{PEER}] {name} drain, {jobs} jobs enqueued, starting the workers")
    started_at = w.start_workers()
    if during is not None:
        jobs += during(w.broker())
    with progress_bar(w.settings) as progress:
        task = progress.add_task(name, total=jobs)
        row = w.wait_done(jobs, lambda done: progress.update(task, completed=min(done, jobs)))
    rate = jobs / (float(row["last_at"]) - started_at)
    figures = db.fetch_all(conn, "bench_label_figures", {"since": started_at})
    w.close()
    return rate, {str(f["label"]): f for f in figures}


def _label_summary(figures: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    saturated = sum(int(f["saturated"]) for f in figures.values())
    return {
        "share_under_saturation": {
            label: round(int(f["saturated"]) / saturated, 4) if saturated else None
            for label, f in figures.items()
        },
        "wait_p95_ms": {label: _round(f["wait_p95_ms"]) for label, f in figures.items()},
        "wait_p50_ms": {label: _round(f["wait_p50_ms"]) for label, f in figures.items()},
        "done": {label: int(f["done"]) for label, f in figures.items()},
    }


def round_cost(plain: float, fair: float) -> float:
    """What the fair drain lost against the plain drain of the same round, in percent."""
    return round((plain - fair) / plain * 100, 2)


def fairness_cost(costs: list[float]) -> float:
    """The fairness cost over rounds whose pairs took turns going first (odd rounds
    plain first): the mean of the two orders' median costs. On this machine the
    order of a pair weighs on its round about as much as the cost itself, one way
    when plain runs first and the other way when fair does: the mean of the two
    orders cancels that, where the median of all 7 rounds (4 plain first) would not."""
    plain_first, fair_first = costs[0::2], costs[1::2]
    if not fair_first:
        return round(statistics.median(plain_first), 2)
    return round((statistics.median(plain_first) + statistics.median(fair_first)) / 2, 2)


def run_tiers(w: Workload) -> None:
    """Rounds of a plain priority drain and a fair drain, in turn first (so that
    neither always runs on the machine the other warmed); fill ``w.result`` as it goes."""
    policy = TierPolicy.from_env()
    result = w.result
    plain_kinds, fair_kinds = tier_mix(policy, w.settings.jobs)
    result["expected_share"] = expected_shares(policy)
    rates: dict[str, list[float]] = {"plain": [], "fair": []}
    order = [t.name for t in policy.tiers]  # best tier first, as the policy names them
    for round_no in range(1, w.settings.rounds + 1):
        pair = [("plain", plain_kinds), ("fair", fair_kinds)]
        for name, kinds in pair if round_no % 2 else pair[::-1]:
            label = f"tiers {name} {round_no}/{w.settings.rounds}"
            rate, figures = drain_labelled(w, label, kinds)
            rates[name].append(round(rate, 1))
            result[f"{name}_drain_jobs_per_s_rounds"] = rates[name]
            result[f"{name}_drain_jobs_per_s"] = round(statistics.median(rates[name]), 1)
            summary = _label_summary(figures)
            for key in ("share_under_saturation", "wait_p95_ms", "wait_p50_ms", "done"):
                if name == "fair":
                    result[key] = {tier: summary[key].get(tier) for tier in order}
                else:
                    result[f"plain_{key}"] = summary[key]
        costs = [round_cost(p, f) for p, f in zip(rates["plain"], rates["fair"], strict=True)]
        result["fairness_cost_percent_rounds"] = costs
        result["fairness_cost_percent"] = fairness_cost(costs)


def run_users(w: Workload) -> None:
    """A flood of one user's jobs, and newcomers' single jobs sent while it drains: once
    without user ids (FIFO within the tier), once with (user rounds)."""
    result = w.result
    result["newcomers"] = USERS_NEWCOMERS
    for name, with_users in (("without_rounds", False), ("with_rounds", True)):
        flood = [("flood", {"tier": "pro", **({"user_id": "flood"} if with_users else {})})]

        def newcomers(broker: PostgresBroker, with_users: bool = with_users) -> int:
            for n in range(USERS_NEWCOMERS):
                time.sleep(USERS_NEWCOMER_GAP_S)
                options = {"tier": "pro", **({"user_id": f"newcomer-{n}"} if with_users else {})}
                broker.enqueue_many(labelled_messages([("newcomer", options)]))
            return USERS_NEWCOMERS

        rate, figures = drain_labelled(
            w, f"users {name.replace('_', ' ')}", flood * w.settings.jobs, newcomers
        )
        result[f"{name}_drain_jobs_per_s"] = round(rate, 1)
        newcomer = figures.get("newcomer", {})
        for key in ("wait_p50_ms", "wait_p95_ms"):
            result[f"{name}_newcomer_{key}"] = _round(newcomer.get(key))


def _read_line(w: Workload, proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """One line from the producer's stdout, or an error when it takes too long."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            return proc.stdout.readline()
        w.check()
        if time.monotonic() >= deadline:
            raise RuntimeError("the producer process did not answer in time")


def run_steady(w: Workload) -> None:
    """Fill ``w.result`` as it goes, so that a timeout still leaves partial figures."""
    seconds, result = w.settings.seconds, w.result
    conn = w.setup()
    w.start_workers()
    broker = w.broker()
    broker.enqueue_many(bench_messages(WARMUP_JOBS))
    broker.close()
    w.wait_done(WARMUP_JOBS)
    db.execute(conn, "bench_reset")

    # The producer runs in a process of its own (this module with --produce), so that
    # it does not share a core's worth of Python with the bench. Handshake: it prints
    # "ready" once connected, we answer "go", it enqueues for `seconds` and prints
    # {"enqueued": n}.
    w.producer = subprocess.Popen(
        [
            sys.executable, "-m", "receiptq.tools.bench", "--produce",
            "--url", w.url, "--seconds", str(seconds),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    producer = w.producer
    stdin: IO[bytes] | None = producer.stdin
    assert stdin is not None
    if _read_line(w, producer, STOP_TIMEOUT_S * 3).strip() != b"ready":
        raise RuntimeError("the producer process did not start")
    log(w.settings, f"[{PEER}] steady: producing for {seconds:g} s")
    start = time.monotonic()
    stdin.write(b"go\n")
    stdin.flush()

    while (elapsed := time.monotonic() - start) < seconds:
        time.sleep(min(0.25, seconds - elapsed))
        w.check()
        completed = int(w.fetch("bench_progress")["done"])
        result["completed"] = completed
        result["completed_jobs_per_s"] = round(completed / (time.monotonic() - start), 1)
    window_end = time.time()
    window_s = time.monotonic() - start

    line = _read_line(w, producer, STOP_TIMEOUT_S + seconds)
    enqueued = int(json.loads(line)["enqueued"])
    producer.wait(STOP_TIMEOUT_S)  # let it close cleanly

    # The figures of jobs that started before the window closed (the workers write
    # them every 50 ms: give them time to land).
    time.sleep(RECORD_SETTLE_S)
    window = w.fetch("bench_window", {"until": window_end})
    completed = int(window["done"])
    latencies = [float(value) for value in window["latencies_ms"]]

    result["enqueued"] = enqueued
    result["enqueue_jobs_per_s"] = round(enqueued / seconds, 1)
    result["completed"] = completed
    result["completed_jobs_per_s"] = round(completed / window_s, 1)
    result["latency_samples"] = len(latencies)
    result["latency_p50_ms"] = _round(percentile(latencies, 0.50))
    result["latency_p99_ms"] = _round(percentile(latencies, 0.99))
    # Jobs enqueued in the window but not run at its end: when large, the consumers
    # did not keep up and the latencies leave out the jobs still waiting.
    result["backlog_at_end"] = max(0, enqueued - completed)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
