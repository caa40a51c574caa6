"""receiptq.processes: a graceful stop signals the main process only, then kills what
is left of its process group; a crash kills the whole group at once."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import psutil

from receiptq import processes

#: A main process that forks a child into its group, notes the child's pid, and
#: notes the signal it gets before it exits.
FORKS = 'sleep 600 & echo $! > "$1"; trap "echo term > \\"$1.sig\\"; exit 0" TERM; wait'


def start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    pid_file = tmp_path / "child"
    proc = subprocess.Popen(["sh", "-c", FORKS, "sh", str(pid_file)], start_new_session=True)
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the child did not start"
        time.sleep(0.02)
    return proc, int(pid_file.read_text()), pid_file


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_graceful_stop_terms_the_main_process_and_kills_what_it_left(tmp_path):
    proc, child, pid_file = start(tmp_path)
    processes.stop_process(proc, grace_s=10)
    assert proc.returncode == 0  # the main process took SIGTERM and exited on its own
    assert (tmp_path / "child.sig").read_text().strip() == "term"
    deadline = time.monotonic() + 5
    while not gone(child):
        assert time.monotonic() < deadline, "the forked child outlived the stop"
        time.sleep(0.02)


def test_a_crash_kills_the_whole_group_at_once(tmp_path):
    proc, child, _ = start(tmp_path)
    processes.stop_process(proc, grace_s=10, sig=signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "child.sig").exists()
    deadline = time.monotonic() + 5
    while not gone(child):
        assert time.monotonic() < deadline, "the forked child outlived the kill"
        time.sleep(0.02)


def test_log_tail_gives_the_last_lines_on_one_line(tmp_path):
    log = tmp_path / "workers.log"
    log.write_text("one\ntwo\nthree\n")
    assert processes.log_tail(log, lines=2) == "two | three"
    assert processes.log_tail(tmp_path / "missing.log") == ""
