"""The install extras: which optional packages each brings, and the one line that says
which to install when one is missing.

``pip install receiptq`` is the job system: broker, middleware, CLI, web dashboard.
The receipt app's heavy parts come with extras, so that an app that only runs its
own jobs never installs them:

- ``receipts``: what workers of the receipt pipeline need: RapidOCR
  (``rapidocr-onnxruntime``, which pulls onnxruntime, OpenCV and numpy), Pillow
  (reading images) and rapidfuzz (matching merchants to bank descriptions).
- ``demo``: ``receipts``, plus what only ``receiptq demo`` needs: the fonts and
  Pillow drawing of the generated receipts, aiosmtpd (a local SMTP sink:
  ``receiptq smtp-sink``) and pgserver (the embedded PostgreSQL used when no
  database URL is set).

The modules that need them import them when first used, never at import time, so
the core modules import without them.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

#: The top-level modules each extra installs.
EXTRAS: dict[str, tuple[str, ...]] = {
    "receipts": ("rapidocr_onnxruntime", "PIL", "rapidfuzz"),
    "demo": (
        "rapidocr_onnxruntime", "PIL", "rapidfuzz",
        "font_source_sans_pro", "font_source_serif_pro", "aiosmtpd", "pgserver",
    ),
}  # fmt: skip


class MissingExtra(ImportError):
    """A part of receiptq needs an install extra that is not installed (the message is
    one line: what needs it, and the pip command)."""


def install_command(extra: str) -> str:
    return f"pip install 'receiptq[{extra}]'"


def _message(what: str, extra: str, absent: list[str]) -> str:
    return (
        f"{what} needs receiptq's {extra!r} extra (not installed: {', '.join(absent)}): "
        f"{install_command(extra)}"
    )


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing(extra: str) -> list[str]:
    """The extra's modules that cannot be imported here."""
    return [name for name in EXTRAS[extra] if not _importable(name)]


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` unless every module of the extra is importable."""
    absent = missing(extra)
    if absent:
        raise MissingExtra(_message(what, extra, absent))


def import_optional(name: str, extra: str, what: str) -> ModuleType:
    """Import a module that an extra brings; :class:`MissingExtra` if it is absent."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingExtra(_message(what, extra, [name.partition(".")[0]])) from exc
