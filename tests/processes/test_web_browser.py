"""The dashboard in a real browser: headless Chromium against a live database.

Needs Debian's ``chromium`` and ``chromium-driver`` (CI installs them); skipped,
with the reason, on a machine without them. Saves artifacts/dashboard.png.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import dramatiq
import pytest
import uvicorn

from receiptq import db, monitor
from receiptq.web.app import create_app
from tests_support import start_deliveries

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless browser test needs Chromium and its driver: "
    "apt-get install -y chromium chromium-driver",
)


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def server(database_url: str) -> Iterator[str]:
    """The dashboard served by uvicorn in a thread on a free local port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(database_url, sample_interval_s=0.5)
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: uv.started, 20, "uvicorn to start")
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(20)
    sock.close()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="receiptq-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1440,1500",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def flowing(broker, conn) -> Iterator[dict]:
    """Jobs flowing through an in-process worker: receipts succeed, bad ones dead-letter;
    the 'parked' queue is paused and has jobs no worker takes, some scheduled for later;
    the 'held' queue has 1 job running and 2 reserved."""

    @dramatiq.actor(queue_name="ocr", max_retries=0)
    def ocr_receipt(receipt_id: int) -> None:
        time.sleep(0.01 * (receipt_id % 5))

    @dramatiq.actor(queue_name="ocr", max_retries=0)
    def parse_total(receipt_id: int) -> None:
        raise ValueError(f"receipt {receipt_id}: no total found")

    @dramatiq.actor(queue_name="parked")
    def archive(receipt_id: int) -> None:
        pass

    for receipt in range(3):
        parse_total.send(receipt)
    for receipt in range(5):
        archive.send(receipt)
    for receipt in range(2):
        archive.send_with_options(args=(receipt,), delay=3_600_000)
    db.execute(conn, "queue_pause", {"queue": "parked"})

    @dramatiq.actor(queue_name="held")
    def hold(receipt_id: int) -> None:
        pass

    for receipt in range(3):  # claimed by the test's broker: 1 started, 2 reserved
        hold.send(receipt)
    start_deliveries(broker, broker.claim("held", 3)[0])
    worker = dramatiq.Worker(broker, worker_threads=2, queues={"ocr"})
    worker.start()
    stop = threading.Event()

    def produce() -> None:
        receipt = 0
        while not stop.wait(0.05):
            ocr_receipt.send(receipt)
            receipt += 1

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    wait_until(lambda: monitor.snapshot(conn)["totals"]["dead"] == 3, 30, "3 dead letters")
    try:
        yield {"stop": stop, "worker": worker, "producer": producer}
    finally:
        stop.set()
        producer.join(5)
        worker.stop()


def text_of(driver, selector: str) -> str:
    """The element's text, "" while it is not there. The dashboard replaces its
    cells on each refresh: one redrawn between finding and reading is found again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(5):
        elements = driver.find_elements(By.CSS_SELECTOR, selector)
        try:
            return elements[0].text if elements else ""
        except StaleElementReferenceException:
            time.sleep(0.05)  # redrawn between finding and reading it: find it again
    return ""


def depth_samples(server: str) -> list[dict]:
    with urllib.request.urlopen(f"{server}/api/dashboard", timeout=10) as response:
        return json.load(response)["depth"]


def dead_letter_ids(conn) -> list[int]:
    rows = db.fetch_all(conn, "dead_letter_list", {"actor": None, "queue": None, "limit": 100})
    return sorted(row["id"] for row in rows)


def test_dashboard_shows_the_database_figures_and_retries_a_dead_letter(
    server, browser, flowing, broker, conn
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for name in ("ocr", "email"):
        db.execute(conn, "breaker_register", {"name": name, "fail_max": 5, "reset_timeout_s": 60})
    db.execute(conn, "breaker_set_state", {"name": "ocr", "state": "open"})
    db.execute(conn, "breaker_mark_opened", {"name": "ocr", "reset_timeout_s": 60})
    browser.get(server)
    wait_until(lambda: text_of(browser, "#connection") == "live", 20, "the page to go live")

    # Stable figures are shown as the database has them.
    snap = monitor.snapshot(conn)
    parked = snap["queues"]["parked"]
    assert (parked["queued"], parked["scheduled"]) == (5, 2)
    wait_until(
        lambda: text_of(browser, '[data-queue="parked"][data-field="queued"]') == "5", 10, "parked"
    )
    assert text_of(browser, '[data-queue="parked"][data-field="scheduled"]') == "2"
    assert text_of(browser, '[data-queue="parked"][data-field="settings"]') == "paused"
    assert text_of(browser, '[data-queue="held"][data-field="running"]') == "1"
    assert text_of(browser, '[data-queue="held"][data-field="reserved"]') == "2"
    wait_until(lambda: text_of(browser, '[data-total="dead"]') == "3", 10, "3 dead letters shown")
    rows = browser.find_elements(By.CSS_SELECTOR, "#dead-letters tr[data-dead-letter]")
    shown = sorted(int(row.get_attribute("data-dead-letter")) for row in rows)
    assert shown == dead_letter_ids(conn)
    assert "no total found" in text_of(browser, "#dead-letters tbody")
    assert text_of(browser, '[data-breaker="ocr"] .badge') == "open"
    assert text_of(browser, '[data-breaker="email"] .badge') == "closed"
    alive = sum(1 for w in snap["workers"] if w["alive"])
    assert alive >= 1
    wait_until(
        lambda: text_of(browser, "#workers-alive").startswith(f"{alive} /"), 10, "workers alive"
    )
    # Let the charts fill with a few samples while jobs flow, then keep a screenshot.
    wait_until(lambda: float(text_of(browser, '[data-total="throughput_per_s_1m"]') or 0) > 0.2,
               30, "throughput to show")  # fmt: skip
    # A few more depth samples, so that the screenshot's chart has a shape.
    wait_until(lambda: len(depth_samples(server)) >= 12, 30, "12 depth samples")
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))

    # Once the flow stops, the done counts on the page settle on the database's.
    flowing["stop"].set()
    flowing["producer"].join(5)
    broker.join("ocr")
    flowing["worker"].join()

    def done_matches() -> bool:
        figures = monitor.snapshot(conn)["queues"]["ocr"]
        expected = f"{figures['done_1m']:,} / {figures['done_5m']:,} / {figures['done_60m']:,}"
        return text_of(browser, '[data-queue="ocr"][data-field="done"]') == expected

    wait_until(done_matches, 15, "the done counts to match the database")

    # Retry one dead letter through the confirm dialog: it leaves the list.
    target = dead_letter_ids(conn)[0]
    row = f'#dead-letters tr[data-dead-letter="{target}"]'
    browser.find_element(By.CSS_SELECTOR, f"{row} button.retry").click()
    alert = WebDriverWait(browser, 5).until(lambda d: d.switch_to.alert)
    assert f"dead letter {target}" in alert.text
    alert.accept()
    wait_until(lambda: not browser.find_elements(By.CSS_SELECTOR, row), 10, "the row to leave")
    assert target not in dead_letter_ids(conn)
    assert "retried 1" in text_of(browser, "#toast")
