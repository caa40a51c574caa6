"""Every setting of receiptq, read from the environment here and nowhere else.

:class:`Settings` is one frozen dataclass: each field is a ``RECEIPTQ_*``
environment variable (the database URL also falls back to ``DATABASE_URL``)
with its unit in the name. :meth:`Settings.from_env` reads them all at once and
validates each, so a malformed value is one line naming its variable, not a
silent default. Code passes values as keyword arguments (``None``: not given,
so ``0`` is a value like any other)::

    settings = Settings.from_env(lease_s=10)      # the environment, then 10 s leases
    broker = PostgresBroker(settings=settings)

Other modules take a :class:`Settings` (or explicit arguments); only this one
reads ``os.environ``. :func:`child_environment` is the environment a child
process (a ``dramatiq`` worker) is started with.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from receiptq.errors import ConfigError, shorten

__all__ = [
    "BreakerLimits",
    "ConfigError",
    "Settings",
    "child_environment",
    "readme_table",
    "validate_database_url",
]

#: Environment variables consulted for the database URL, in order.
DATABASE_URL_VARIABLES = ("RECEIPTQ_DATABASE_URL", "DATABASE_URL")
#: What a database URL looks like (error messages show it).
URL_EXAMPLE = "postgresql://USER:PASSWORD@HOST:5432/DBNAME"
#: URL schemes libpq reads as PostgreSQL.
POSTGRES_SCHEMES = ("postgresql", "postgres")
#: ``RECEIPTQ_TIERS`` default: name:weight:priority_offset, best tier first.
DEFAULT_TIERS = "enterprise:6:0,pro:3:10,free:1:20"
#: ``RECEIPTQ_POOLER`` values: ``session`` (direct connections, or a session pooler),
#: ``transaction`` (a pooler in transaction mode; see :mod:`receiptq.db`).
POOLER_MODES = ("session", "transaction")
#: ``RECEIPTQ_SMTP_TLS`` values.
TLS_MODES = ("none", "starttls", "ssl")
#: The per-service circuit-breaker variables: ``RECEIPTQ_BREAKER_<NAME>_<SUFFIX>``.
BREAKER_PREFIX = "RECEIPTQ_BREAKER_"
BREAKER_SUFFIXES = ("FAIL_MAX", "RESET_S", "TRIAL_TIMEOUT_S")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_URL_PASSWORD = re.compile(r"((?:^|[/\s])[^:/@\s]*:)\S*@")
_KEY_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


# -- reading one value ----------------------------------------------------------------


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in _TRUE + _FALSE:
        raise ConfigError(f"{name} must be 1 or 0 (on or off), got {raw!r}")
    return value in _TRUE


def _str(name: str, raw: str) -> str:
    return raw.strip()


def _path(name: str, raw: str) -> Path:
    return Path(raw.strip()).expanduser()


#: How a field's variable is parsed, by the field's type (``None`` aside).
_KINDS = {"bool": _bool, "int": _int, "float": _float, "str": _str, "Path": _path}


# -- limits: (field, lowest, highest, inclusive lowest) ----------------------------------

#: Numbers that may be left unset (None): their default depends on another setting.
_OPTIONAL = ("poll_interval_ms",)
_AT_LEAST_0 = ("ack_flush_ms", "ocr_threads", "periodic_skip_delay_s", "throttle_cpu_percent")
_AT_LEAST_1 = ("pool_max_size", "max_message_bytes", "rate_limit_pool_max_size")
_ABOVE_0 = (
    "lease_s",
    "poll_interval_ms",
    "rate_limit_poll_interval_ms",
    "ocr_timeout_s",
    "smtp_timeout_s",
    "web_sample_interval_s",
    "throttle_memory_percent",
    "throttle_db_connections_percent",
)


@dataclass(frozen=True, slots=True)
class BreakerLimits:
    """A service's breaker numbers from the environment (None: not set)."""

    fail_max: int | None = None
    reset_s: float | None = None
    trial_timeout_s: float | None = None


@dataclass(frozen=True)
class Settings:
    """receiptq's settings. Each field is read from ``RECEIPTQ_<FIELD>`` (upper case),
    parsed as the field's type; :data:`MEANINGS` says what each is for (the README's
    configuration table is made from the fields and it)."""

    database_url: str | None = None
    home: Path | None = None
    lease_s: float = 30.0
    pooler: str = "session"
    poll_interval_ms: int | None = None
    listen: bool = True
    pool_max_size: int = 6
    ack_flush_ms: int = 5
    claim_ahead: bool = False
    max_message_bytes: int = 1 << 20
    tiers: str = DEFAULT_TIERS
    throttle_cpu_percent: float = 0.0
    throttle_memory_percent: float = 95.0
    throttle_db_connections_percent: float = 95.0
    rate_limit_pool_max_size: int = 4
    rate_limit_poll_interval_ms: int = 500
    periodic_skip_delay_s: int = 600
    stats_retention_days: int = 14
    dead_letter_retention_days: int = 30
    retention_batch_size: int = 1000
    report_user_id: str | None = None
    receipt_queue_prefix: str = ""
    ocr_url: str | None = None
    ocr_timeout_s: float = 30.0
    ocr_threads: int = 0
    image_dir: Path | None = None
    service_fail_rate: float = 0.0
    smtp_host: str = "localhost"
    smtp_port: int | None = None
    smtp_tls: str = "none"
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "receiptq@localhost"
    smtp_timeout_s: float = 10.0
    web_token: str | None = None
    web_sample_interval_s: float = 2.0
    #: ``RECEIPTQ_BREAKER_<NAME>_FAIL_MAX`` / ``_RESET_S`` / ``_TRIAL_TIMEOUT_S``, by
    #: lower-case service name (see :mod:`receiptq.middleware.breakers`).
    breakers: Mapping[str, BreakerLimits] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _AT_LEAST_0 + _AT_LEAST_1 + _ABOVE_0:
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue  # not given: its default depends on another setting
            low = 1 if name in _AT_LEAST_1 else 0
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{_variable(name)} must be a number, got {value!r}")
            if value < low or (name in _ABOVE_0 and value == 0):
                bound = "above 0" if name in _ABOVE_0 else f"at least {low}"
                raise ConfigError(f"{_variable(name)} ({name}) must be {bound}, got {value!r}")
        if not 0.0 <= self.service_fail_rate <= 1.0:
            raise ConfigError(
                f"RECEIPTQ_SERVICE_FAIL_RATE must be between 0 and 1, got {self.service_fail_rate}"
            )
        if self.pooler not in POOLER_MODES:
            raise ConfigError(
                f"RECEIPTQ_POOLER must be session or transaction, got {shorten(self.pooler, 40)!r}"
            )
        if self.smtp_tls not in TLS_MODES:
            raise ConfigError(
                f"RECEIPTQ_SMTP_TLS must be one of {', '.join(TLS_MODES)}: {self.smtp_tls!r}"
            )
        if self.smtp_port is not None and not 0 < self.smtp_port < 65536:
            raise ConfigError(f"RECEIPTQ_SMTP_PORT must be a port (1-65535), got {self.smtp_port}")
        if self.database_url is not None:
            validate_database_url(self.database_url, "the database URL")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """The settings of the environment (``environ``, default ``os.environ``), then
        ``overrides`` (a value of None is no override)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, parse in _parsers().items():
            raw = env.get(_variable(name), "")
            if raw.strip():
                values[name] = parse(_variable(name), raw)
        values["database_url"] = _database_url(env)
        for name in ("smtp_tls", "pooler"):
            if name in values:
                values[name] = values[name].strip().lower()
        values["breakers"] = _breakers(env)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **overrides: Any) -> Settings:
        """These settings with ``overrides`` (None: keep this one's value)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **given) if given else self

    def home_dir(self) -> Path:
        """``home``, else ``~/.receiptq``."""
        return self.home if self.home is not None else Path("~/.receiptq").expanduser()

    def breaker(self, name: str) -> BreakerLimits:
        return self.breakers.get(name.lower(), BreakerLimits())


#: What each setting means (the README's table; its variable is ``RECEIPTQ_<FIELD>``).
MEANINGS = {
    "database_url": "PostgreSQL URL",
    "home": "data of the embedded PostgreSQL",
    "lease_s": "lease of a claimed job; renewed every lease/3",
    "pooler": (
        "`transaction` behind a pooler in transaction mode (PgBouncer `pool_mode ="
        " transaction`, Supavisor's port 6543...): no prepared statements, no session"
        " settings, no `LISTEN` (polling) on any connection; also"
        " `PostgresBroker(pooler=...)` and `receiptq --pooler`. `session` (direct"
        " connections, or a session pooler) refuses to start behind a transaction pooler."
        " See [operations](docs/operations.md#managed-postgresql)"
    ),
    "poll_interval_ms": "idle polling, the fallback to LISTEN/NOTIFY",
    "listen": (
        "`0`: poll only, even where `LISTEN` works (not enough for a transaction"
        " pooler: set `RECEIPTQ_POOLER`)"
    ),
    "pool_max_size": "connections per process (plus one listener)",
    "ack_flush_ms": "how long acks are batched at most (`0`: at once)",
    "claim_ahead": (
        "`1`: a process running short jobs may hold beyond Dramatiq's prefetch what it"
        " runs in four claims' round trips (at most 6x), for throughput; off, it never"
        " holds more than its prefetch"
    ),
    "max_message_bytes": "largest message",
    "tiers": "tiers: name, weight, priority offset",
    "throttle_cpu_percent": "a worker stops claiming above this CPU use (0: off)",
    "throttle_memory_percent": "a worker stops claiming above this memory use",
    "throttle_db_connections_percent": "... above this share of the server's connections",
    "rate_limit_pool_max_size": "connections of the rate-limiter backend",
    "rate_limit_poll_interval_ms": "rate-limit waits poll this often",
    "periodic_skip_delay_s": "a periodic tick older than this is skipped",
    "stats_retention_days": "days of per-minute statistics kept",
    "dead_letter_retention_days": "days of dead letters kept",
    "retention_batch_size": "rows one retention statement deletes",
    "report_user_id": "user the hourly dead-letter report is emailed to",
    "receipt_queue_prefix": "prefix of the receipt queues (the demo's: `demo.`)",
    "ocr_url": "a hosted OCR service, not RapidOCR",
    "ocr_timeout_s": "its timeout",
    "ocr_threads": "threads of RapidOCR (0: its choice)",
    "image_dir": "keep receipt images as files, not in the row",
    "service_fail_rate": "share of service calls failed on purpose (demo)",
    "smtp_host": "the email server",
    "smtp_port": "its port",
    "smtp_tls": "`none`, `starttls` or `ssl`",
    "smtp_user": "its login",
    "smtp_password": "its password",
    "smtp_from": "sender of the emails",
    "smtp_timeout_s": "its timeout",
    "web_token": "required to bind the dashboard beyond 127.0.0.1",
    "web_sample_interval_s": "seconds between two dashboard samples",
}
#: The README's default where the field's own does not say it.
SHOWN = {
    "database_url": "`DATABASE_URL`, else embedded",
    "home": "`~/.receiptq`",
    "poll_interval_ms": "`500` (`200` with `RECEIPTQ_POOLER=transaction`)",
    "smtp_port": "`25` (`465` with ssl)",
}


def _variable(name: str) -> str:
    """The environment variable of a field."""
    return f"RECEIPTQ_{name.upper()}"


def _parsers() -> dict[str, Callable[[str, str], Any]]:
    """Each field read from a variable, and how its value is parsed."""
    return {
        spec.name: _KINDS[str(spec.type).removesuffix(" | None")]
        for spec in dataclasses.fields(Settings)
        if spec.name in MEANINGS
    }


def _database_url(env: Mapping[str, str]) -> str | None:
    """The first database URL variable set (an empty one is unset), validated under its name."""
    for name in DATABASE_URL_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return validate_database_url(value, name)
    return None


def _breakers(env: Mapping[str, str]) -> dict[str, BreakerLimits]:
    found: dict[str, dict[str, Any]] = {}
    for variable, raw in env.items():
        if not variable.startswith(BREAKER_PREFIX) or not raw.strip():
            continue
        rest = variable[len(BREAKER_PREFIX) :]
        for suffix in BREAKER_SUFFIXES:
            if rest.endswith("_" + suffix) and len(rest) > len(suffix) + 1:
                name = rest[: -len(suffix) - 1].lower()
                parse = _int if suffix == "FAIL_MAX" else _float
                found.setdefault(name, {})[suffix.lower()] = parse(variable, raw)
    return {
        name: BreakerLimits(n.get("fail_max"), n.get("reset_s"), n.get("trial_timeout_s"))
        for name, n in found.items()
    }


# -- database URLs ------------------------------------------------------------------------


def validate_database_url(url: str, setting: str) -> str:
    """Return ``url`` when libpq can read it (a ``postgresql://`` URL or a
    ``key=value`` string with a numeric port); else a ConfigError that names the
    ``setting`` it came from and shows what a URL looks like, never a password."""
    if not url.strip():
        raise ConfigError(f"{setting} is empty: give a PostgreSQL URL such as {URL_EXAMPLE}")
    scheme = _SCHEME.match(url)
    if scheme is not None and scheme.group(1).lower() not in POSTGRES_SCHEMES:
        raise ConfigError(
            f"{setting} is a {shorten(scheme.group(1), 20)}:// URL, not a PostgreSQL one: "
            f"use {URL_EXAMPLE}"
        )
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ConfigError(
            f"{setting} is not a PostgreSQL URL ({redact_url(url)}): use {URL_EXAMPLE}"
        ) from None
    port = str(params.get("port") or "")
    if not all(part.strip().isdigit() for part in port.split(",") if part):
        raise ConfigError(
            f"{setting} has the port {shorten(port, 20)!r}, not a number: use {URL_EXAMPLE}"
        )
    return url


def redact_url(url: str) -> str:
    """``url`` as a message may show it: any password replaced by ``***``, cut short."""
    hidden = _KEY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", url))
    return shorten(hidden, 80)


def pooler_from_env() -> str:
    """``RECEIPTQ_POOLER`` alone (``session`` when unset), validated: what every new
    connection of the process reads (see :func:`receiptq.db.pooler`), without the
    rest of the environment's settings."""
    return Settings(
        pooler=(os.environ.get("RECEIPTQ_POOLER", "") or "session").strip().lower()
    ).pooler


def libpq_environment() -> dict[str, str]:
    """libpq's own ``PGHOST``, ``PGPORT`` and ``PGDATABASE`` (for messages naming a server)."""
    return {k: os.environ[k] for k in ("PGHOST", "PGPORT", "PGDATABASE") if os.environ.get(k)}


# -- child processes and the README ---------------------------------------------------------


@contextmanager
def environment_with(**variables: str) -> Iterator[None]:
    """This process's environment with ``variables`` set, then as it was (the CLI
    imports an app's modules this way, as a worker would with them set)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def child_environment(**variables: str) -> dict[str, str]:
    """The environment a child process starts with: this one's, plus ``variables``."""
    return {**os.environ, **variables}


def _rows() -> Iterator[tuple[str, str, str]]:
    for spec in dataclasses.fields(Settings):
        if spec.name in MEANINGS:
            if isinstance(spec.default, bool):
                default = "`1`" if spec.default else "`0`"
            else:
                default = f"`{spec.default}`"
            shown = SHOWN.get(spec.name, "unset" if spec.default is None else default)
            yield f"`{_variable(spec.name)}`", shown, MEANINGS[spec.name]
    yield (
        "`RECEIPTQ_BREAKER_<NAME>_FAIL_MAX` / `_RESET_S` / `_TRIAL_TIMEOUT_S`",
        "`5` / `30` / `60`",
        "circuit breaker of a service (`OCR`, `EMAIL`)",
    )


def readme_table() -> str:
    """The README's configuration table: one row per setting."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| {variable} | {shown} | {meaning} |" for variable, shown, meaning in _rows()]
    return "\n".join(lines)
