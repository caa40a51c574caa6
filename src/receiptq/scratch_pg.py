"""A PostgreSQL server of its own, in a temporary directory, that can be stopped and
restarted: for fault tests and the chaos run, which must never restart a shared server.

It uses the binaries that ship with ``pgserver`` (a dependency already, for the
embedded database) and listens on a free TCP port of 127.0.0.1, as a real
deployment's server would. As root, the server runs as the ``pgserver`` system user
(PostgreSQL refuses to run as root), as pgserver itself does.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Literal

from psycopg.conninfo import make_conninfo

#: Settings for a throw-away server: no durability needed across an OS crash.
SERVER_OPTIONS = ("-c fsync=off", "-c full_page_writes=off", "-c max_connections=200")
#: pg_ctl's wait for a start or stop (s).
PG_CTL_TIMEOUT_S = 60


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _binaries() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: no XDG_RUNTIME_DIR
        from pgserver._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _system_user() -> str | None:
    """The user the server runs as when this process is root (None: this process's)."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.utils import ensure_folder_permissions, ensure_user_exists

    ensure_user_exists("pgserver")
    bin_path = _binaries()
    ensure_folder_permissions(bin_path, 0o055)
    ensure_folder_permissions(bin_path.parent / "lib", 0o044)
    return "pgserver"


class ScratchServer:
    """initdb in a temporary directory, then start/stop/restart on demand.

    ``url(dbname)`` is a URL for a database of it (trust authentication, user
    ``postgres``); ``log_text()`` is the server's log so far; ``close()`` stops it
    and deletes its directory.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.root = Path(tempfile.mkdtemp(prefix="receiptq-scratch-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self._user = _system_user()
        if self._user is not None:
            shutil.chown(self.root, self._user, self._user)
            self.root.chmod(0o755)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "utf8")

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(_binaries() / program), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            user=self._user,
            cwd=self.root,
            timeout=PG_CTL_TIMEOUT_S,
        )

    def url(self, dbname: str = "postgres") -> str:
        return make_conninfo(
            host=self.host, port=self.port, user="postgres", dbname=dbname, connect_timeout=5
        )

    def start(self) -> None:
        options = " ".join(
            (f"-h {self.host}", f"-p {self.port}", f"-k {self.root}", *SERVER_OPTIONS)
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options,
                  "-w", "start")  # fmt: skip

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except subprocess.SubprocessError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ScratchServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
