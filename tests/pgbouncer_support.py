"""A real PgBouncer in front of the test server, for the transaction-pooler tests and
tools/pooler_budget.py: started on a free port with its config in a temp directory,
as the ``postgres`` OS user when running as root (PgBouncer refuses to run as root)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: Where Debian's package puts it (``.ci/run`` installs it).
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def pgbouncer_missing() -> str | None:
    """Why PgBouncer cannot run here, or None."""
    if not os.access(PGBOUNCER, os.X_OK):
        return f"no pgbouncer binary at {PGBOUNCER} (apt-get install pgbouncer; .ci/run does)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgBouncer:
    """One pgbouncer process in ``pool_mode`` in front of the server of ``server_url``
    (every database on it); :meth:`url` is a database's URL through it."""

    def __init__(self, server_url: str, *, pool_mode: str, pool_size: int = 20) -> None:
        params = conninfo_to_dict(server_url)
        self.server_url = server_url
        self.user = params.get("user") or "postgres"
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"pooler_pgbouncer_{pool_mode}_"))
        self.log = self.dir / "pgbouncer.log"
        (self.dir / "users.txt").write_text(f'"{self.user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={params.get('host') or '127.0.0.1'} port={params.get('port') or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.dir / 'users.txt'}\n"
            f"pool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\n"
            "max_client_conn = 2000\nmax_db_connections = 0\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.log}\npidfile = {self.dir / 'pgbouncer.pid'}\n"
            f"admin_users = {self.user}\n"
        )
        command = [PGBOUNCER, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            for entry in self.dir.iterdir():
                shutil.chown(entry, "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("pgbouncer did not listen within 10 s")

    def url(self, dbname: str) -> str:
        return make_conninfo(self.server_url, host="127.0.0.1", port=self.port, dbname=dbname)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # pgbouncer: SIGINT = stop now
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
