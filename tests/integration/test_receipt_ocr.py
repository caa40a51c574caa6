"""OCR: RapidOCR on generated receipt images (offline), and the HTTP OCR client."""

from __future__ import annotations

import http.server
import json
import random
import socket
import threading
from collections.abc import Iterator

import pytest

from receiptq.middleware.backoff import PermanentError, RetryAfter
from receiptq.services import images
from receiptq.services.ocr import HttpOcr, OcrServiceError, RapidOcr, check_image, join_lines
from receiptq.services.parsing import parse_receipt


@pytest.fixture(scope="session")
def ocr_engine() -> RapidOcr:
    """One RapidOCR engine for the session, loaded with the network cut off."""

    def no_network(*args, **kwargs):
        raise AssertionError("OCR tried to reach the network")

    engine = RapidOcr()
    patch = pytest.MonkeyPatch()
    patch.setattr(socket.socket, "connect", no_network)
    patch.setattr(socket, "getaddrinfo", no_network)
    try:
        engine.read_text(images.render_receipt(images.random_receipt(random.Random(0))))
    finally:
        patch.undo()
    return engine


#: Each layout in two fonts, each font twice.
LAYOUT_FONTS = [("classic", "sans"), ("classic", "pillow"), ("euro", "serif"),
                ("euro", "sans"), ("us", "pillow"), ("us", "serif")]  # fmt: skip


def clean_receipts() -> list[images.ReceiptSpec]:
    rng = random.Random(42)
    specs = []
    for layout, font in LAYOUT_FONTS:
        spec = images.random_receipt(rng, layout=layout)
        specs.append(images.ReceiptSpec(**{**spec.__dict__, "font": font}))
    return specs


@pytest.mark.parametrize("spec", clean_receipts(), ids=lambda s: f"{s.layout}-{s.font}")
def test_ocr_reads_the_true_total_date_and_currency_of_a_clean_receipt(ocr_engine, spec):
    text = ocr_engine.read_text(images.render_receipt(spec))
    fields = parse_receipt(text)
    assert fields.total == spec.total, text
    assert fields.purchased_on == spec.purchased_on, text
    assert fields.currency == spec.currency, text
    assert fields.merchant is not None
    assert fields.merchant.replace(" ", "") == spec.merchant.upper().replace(" ", "")


def test_ocr_reads_the_total_of_a_slightly_skewed_and_speckled_photo(ocr_engine):
    spec = images.random_receipt(random.Random(5), layout="classic")
    text = ocr_engine.read_text(images.render_receipt(spec, noisy=True, seed=5))
    assert parse_receipt(text).total == spec.total, text


def test_generated_receipts_vary_in_layout_font_and_merchant():
    rng = random.Random(1)
    specs = [images.random_receipt(rng) for _ in range(60)]
    assert {s.layout for s in specs} == set(images.LAYOUTS)
    assert {s.font for s in specs} == {f[0] for f in images.FONTS}
    assert len({s.merchant for s in specs}) >= 6
    assert all(s.total == sum(p for _, p in s.items) + s.tax for s in specs)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"%PDF-1.4 this is not an image", "not a readable image"),
        (images.render_receipt(images.random_receipt(random.Random(3)))[:200], "damaged"),
    ],
)
def test_bytes_that_are_not_a_readable_image_are_a_permanent_error(data, why):
    with pytest.raises(PermanentError, match=why):
        check_image(data)


def test_boxes_on_one_row_become_one_line_read_left_to_right():
    def box(x, y, text):
        return ([[x, y], [x + 40, y], [x + 40, y + 20], [x, y + 20]], text)

    boxes = [box(300, 52, "3.49"), box(20, 10, "SHOP"), box(20, 50, "Milk")]
    assert join_lines(boxes) == "SHOP\nMilk  3.49"


# --- the HTTP OCR client, against a local server -----------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    replies: list[tuple[int, dict[str, str], bytes]] = []
    received: list[bytes] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(body)
        status, headers, reply = type(self).replies.pop(0)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture
def ocr_server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"replies": [], "received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ocr", handler
    server.shutdown()
    server.server_close()


def test_http_ocr_posts_the_image_and_returns_the_text(ocr_server):
    url, handler = ocr_server
    handler.replies.append(
        (200, {"Content-Type": "application/json"}, b'{"text": "SHOP\\nTOTAL 1.00"}')
    )
    assert HttpOcr(url).read_text(b"image bytes") == "SHOP\nTOTAL 1.00"
    assert handler.received == [b"image bytes"]


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "match"),
    [
        (503, {"Retry-After": "7"}, b"busy", RetryAfter, "7"),
        (429, {"Retry-After": "2"}, b"slow down", RetryAfter, "2"),
        (415, {}, b"unsupported", PermanentError, "HTTP 415"),
        (500, {}, b"oops", OcrServiceError, "HTTP 500"),
        (200, {}, b"<html>not json</html>", OcrServiceError, "no JSON text"),
        (200, {}, json.dumps({"text": 3}).encode(), OcrServiceError, "non-string"),
    ],
)
def test_http_ocr_errors_are_classified(ocr_server, status, headers, body, error, match):
    url, handler = ocr_server
    handler.replies.append((status, headers, body))
    with pytest.raises(error, match=match) as raised:
        HttpOcr(url).read_text(b"x")
    if error is RetryAfter:
        assert raised.value.seconds == float(match)


def test_http_ocr_times_out_as_a_transient_error():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        with pytest.raises(OcrServiceError, match="unreachable"):
            HttpOcr(url, timeout_s=0.3).read_text(b"x")
    finally:
        listener.close()


def test_http_ocr_refuses_a_url_that_is_not_http():
    with pytest.raises(ValueError, match="http"):
        HttpOcr("ftp://example.org/")


def test_a_configured_ocr_url_sends_images_to_the_http_service_through_the_breaker(
    broker, ocr_server, monkeypatch
):
    from receiptq.services import ocr

    url, handler = ocr_server
    monkeypatch.setenv("RECEIPTQ_OCR_URL", url)
    monkeypatch.setattr(ocr, "_engine", None)  # this process's engine is built once
    handler.replies.append((200, {}, b'{"text": "FROM THE SERVICE"}'))
    image = images.render_receipt(images.random_receipt(random.Random(9)))
    assert ocr.read_receipt_text(image) == "FROM THE SERVICE"
    assert handler.received == [image]
    assert isinstance(ocr.configured_engine(), HttpOcr)
    # A non-image never reaches the service (nor counts against its breaker).
    with pytest.raises(PermanentError):
        ocr.read_receipt_text(b"nope")
    assert len(handler.received) == 1
