"""Read the text of a receipt image: RapidOCR in process (default) or an HTTP OCR service.

Settings:
  ``RECEIPTQ_OCR_URL``: when set, POST images there (:class:`HttpOcr`) instead of
  running RapidOCR. ``RECEIPTQ_OCR_TIMEOUT_S`` (30): that call's timeout.
  ``RECEIPTQ_OCR_THREADS`` (0 = onnxruntime's choice): threads of one RapidOCR run.

RapidOCR's models ship in the ``rapidocr-onnxruntime`` wheel: nothing is
downloaded. It and Pillow come with the ``receipts`` install extra and are
imported on first use: without them a job fails with one line that names the
extra (a transient error: installed, the retries succeed). The engine loads once per process, on first use, and one image is
read at a time per process (onnxruntime already uses the cores for one image).
Every call goes through the shared "ocr" circuit breaker; an unreadable image is
a :class:`PermanentError` raised before the breaker, so bad input never opens it.
"""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from typing import Any, Protocol

from receiptq.extras import import_optional
from receiptq.middleware.backoff import PermanentError, RetryAfter
from receiptq.middleware.breakers import get_breaker
from receiptq.services.faults import maybe_fail
from receiptq.settings import Settings

#: Timeout of one HTTP OCR call (s).
DEFAULT_TIMEOUT_S = 30.0
#: Largest image accepted, in pixels (Pillow's decompression-bomb guard is 89 M).
MAX_PIXELS = 40_000_000


class OcrServiceError(RuntimeError):
    """The OCR service failed (transient: a retry may succeed)."""


class OcrEngine(Protocol):
    def read_text(self, image: bytes) -> str:
        """The image's text, one line per line of the receipt."""
        ...


def check_image(image: bytes) -> None:
    """Raise :class:`PermanentError` unless the bytes are an image Pillow can read."""
    if not image:
        raise PermanentError("the receipt image is empty")
    Image = import_optional("PIL.Image", "receipts", "reading a receipt image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image)) as picture:
                width, height = picture.size
                picture.verify()
    except (
        Image.UnidentifiedImageError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ):
        raise PermanentError(
            f"not a readable image ({len(image)} bytes, starting {image[:8]!r})"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PermanentError(f"the receipt image is damaged: {exc}") from None
    if width * height > MAX_PIXELS:
        raise PermanentError(f"the receipt image is too large ({width}x{height} pixels)")


def join_lines(boxes: Sequence[tuple[Sequence[Sequence[float]], str]]) -> str:
    """OCR boxes (corner points, text) as text lines: boxes whose vertical centres
    are within half a line height share a line, read left to right."""
    items = []
    for points, text in boxes:
        ys = [p[1] for p in points]
        xs = [p[0] for p in points]
        items.append(((min(ys) + max(ys)) / 2, max(ys) - min(ys), min(xs), text))
    items.sort()
    lines: list[list[tuple[float, float, float, str]]] = []
    for item in items:
        if lines and abs(item[0] - lines[-1][0][0]) < max(item[1], lines[-1][0][1]) / 2:
            lines[-1].append(item)
        else:
            lines.append([item])
    return "\n".join("  ".join(i[3] for i in sorted(line, key=lambda i: i[2])) for line in lines)


class RapidOcr:
    """RapidOCR on onnxruntime, loaded on first use."""

    def __init__(self, *, threads: int | None = None) -> None:
        self.threads = threads if threads is not None else Settings.from_env().ocr_threads
        self._engine: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        rapidocr = import_optional("rapidocr_onnxruntime", "receipts", "OCR (RapidOCR)")
        if self.threads > 0:
            return rapidocr.RapidOCR(intra_op_num_threads=self.threads)
        return rapidocr.RapidOCR()

    def read_text(self, image: bytes) -> str:
        with self._lock:
            if self._engine is None:
                self._engine = self._load()
            result, _ = self._engine(image)
        return join_lines([(box, text) for box, text, _score in result or []])


class HttpOcr:
    """An OCR service over HTTP: POST the image bytes, get ``{"text": "..."}`` back.

    HTTP 429/503 with ``Retry-After`` raise :class:`RetryAfter`; other 4xx mean the
    service refuses this image (:class:`PermanentError`); 5xx, timeouts and
    connection errors are transient (:class:`OcrServiceError`).
    """

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the OCR URL must be http(s)://..., got {url!r}")
        self.url = url
        self.timeout_s = timeout_s

    def read_text(self, image: bytes) -> str:
        request = urllib.request.Request(
            self.url,
            data=image,
            method="POST",
            headers={"Content-Type": "application/octet-stream", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise OcrServiceError(f"OCR service {self.url} unreachable: {exc}") from None
        try:
            text = json.loads(body)["text"]
        except (ValueError, KeyError, TypeError):
            raise OcrServiceError(
                f"OCR service {self.url} sent no JSON text: {body[:80]!r}"
            ) from None
        if not isinstance(text, str):
            raise OcrServiceError(f"OCR service {self.url} sent a non-string text")
        return text

    def _http_error(self, exc: urllib.error.HTTPError) -> Exception:
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        if exc.code in (429, 503) and retry_after and retry_after.strip().isdigit():
            return RetryAfter(float(retry_after))
        if 400 <= exc.code < 500 and exc.code not in (408, 429):
            return PermanentError(f"OCR service refused the image: HTTP {exc.code} {exc.reason}")
        return OcrServiceError(f"OCR service {self.url}: HTTP {exc.code} {exc.reason}")


_engine: OcrEngine | None = None
_engine_lock = threading.Lock()


def configured_engine(settings: Settings | None = None) -> OcrEngine:
    """This process's engine, as ``settings`` (default: the environment's) configure it
    (built once)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            settings = settings or Settings.from_env()
            if settings.ocr_url:
                _engine = HttpOcr(settings.ocr_url, timeout_s=settings.ocr_timeout_s)
            else:
                _engine = RapidOcr(threads=settings.ocr_threads)
        return _engine


def _read_through_service(engine: OcrEngine, image: bytes) -> str:
    maybe_fail("ocr")
    return engine.read_text(image)


def read_receipt_text(image: bytes, engine: OcrEngine | None = None) -> str:
    """The text of a receipt image, through the "ocr" circuit breaker.

    Raises:
      PermanentError: the bytes are not a readable image (or the service refuses it).
    """
    check_image(image)
    return get_breaker("ocr").call(_read_through_service, engine or configured_engine(), image)
