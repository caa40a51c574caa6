"""Starting, watching and stopping real ``dramatiq`` worker processes: for the tools
(``receiptq bench``, ``receiptq demo``, ``python -m receiptq.tools.chaos``) and the
tests that run workers.

Each invocation of the stock Dramatiq CLI runs in a session (process group) of its
own, so that what it forked can be killed with it. A graceful stop sends SIGTERM to
the CLI's main process only, which passes it on once to its worker processes;
signalling the whole group would deliver it twice, which Dramatiq takes as "kill
now" (the workers exit without writing their pending acks and statistics). Whatever
is left of the group after the grace gets SIGKILL.

:func:`sigterm_exits` turns SIGTERM and a first Ctrl-C into ``SystemExit`` at the
next :func:`check_signals`, so that a tool's ``finally`` blocks stop its workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from receiptq.settings import child_environment

#: How long a graceful stop waits before it kills the process group (s).
STOP_GRACE_S = 10.0


def dramatiq_command(
    module: str, *, processes: int, threads: int, queues: Sequence[str] = ()
) -> list[str]:
    """The stock Dramatiq CLI over ``module`` (run with this Python)."""
    command = [sys.executable, "-m", "dramatiq", module,
               "--processes", str(processes), "--threads", str(threads)]  # fmt: skip
    if queues:
        command += ["--queues", *queues]
    return command


def start_dramatiq(
    module: str,
    url: str,
    *,
    processes: int,
    threads: int,
    queues: Sequence[str] = (),
    log_path: Path | None = None,
    append_log: bool = False,
    env: Mapping[str, str] | None = None,
    unset: Sequence[str] = (),
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start the ``dramatiq`` CLI over ``module`` on ``url`` in a session of its own.

    Its output goes to ``log_path`` (truncated, or appended to with ``append_log``),
    else nowhere. ``env``: more environment variables; ``unset``: variables of this
    process's environment that the workers must not see."""
    environment = child_environment(RECEIPTQ_DATABASE_URL=url, **(env or {}))
    for name in unset:
        environment.pop(name, None)
    command = dramatiq_command(module, processes=processes, threads=threads, queues=queues)
    output: Any = subprocess.DEVNULL
    if log_path is not None:
        output = open(log_path, "ab" if append_log else "wb")
    try:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=cwd,
            start_new_session=True,  # its own process group: see stop_process()
        )
    finally:
        if log_path is not None:
            output.close()


def stop_process(
    proc: subprocess.Popen[Any], grace_s: float = STOP_GRACE_S, sig: int = signal.SIGTERM
) -> None:
    """Stop a process started in a session of its own, and whatever it forked.

    SIGTERM (or another signal) goes to the process itself, SIGKILL to its whole
    group at once (a crash). Whatever is left of the group after ``grace_s`` gets
    SIGKILL; returns once the process was reaped."""
    if proc.poll() is None:
        if sig == signal.SIGKILL:
            kill_group(proc.pid)
        else:
            kill(proc.pid, sig)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    kill_group(proc.pid)
    proc.wait()


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal one process, if it still exists."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group, if any of it is left."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def children(pid: int) -> list[int]:
    """The pids of a process's children (a dramatiq CLI's worker processes)."""
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def log_folder(prefix: str) -> Path:
    """A new folder for a run's logs, under the system's temporary directory."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def log_tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log, on one line (for an error message)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def exited_error(what: str, proc: subprocess.Popen[Any], log_path: Path) -> RuntimeError:
    """The error for workers that exited on their own: their status and last log lines."""
    return RuntimeError(
        f"{what} exited with {proc.returncode} (log {log_path}: {log_tail(log_path)})"
    )


_signalled: list[int] = []  # SIGTERMs and SIGINTs received inside sigterm_exits()


@contextmanager
def sigterm_exits() -> Iterator[None]:
    """Turn SIGTERM and a first SIGINT (Ctrl-C) into SystemExit at the next
    check_signals(), which every wait loop calls, so that the finally blocks stop
    every subprocess. Raising from the handler itself could break off a query in the
    middle (psycopg then warns "another command is already in progress" and the
    connection is lost). A second Ctrl-C raises KeyboardInterrupt at once."""

    def handler(signum: int, frame: object) -> None:
        if signum == signal.SIGINT and signal.SIGINT in _signalled:
            raise KeyboardInterrupt
        _signalled.append(signum)

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)
        _signalled.clear()


def check_signals() -> None:
    """Raise SystemExit when a SIGTERM or Ctrl-C arrived (see sigterm_exits)."""
    if _signalled:
        raise SystemExit(128 + _signalled[0])
