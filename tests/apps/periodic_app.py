"""A periodiq app whose clock runs fast, for tests that run real schedulers.

    RECEIPTQ_DATABASE_URL=... TEST_CLOCK_SPEED=30 TEST_CLOCK_ORIGIN=<epoch> \\
        TEST_CLOCK_FAKE_START=<epoch> periodiq apps.periodic_app

periodiq's clock, sleep and alarm are scaled by TEST_CLOCK_SPEED (fake seconds
per real second), so an every-minute actor ticks every 60/SPEED real seconds;
the fake time is FAKE_START at real time ORIGIN, the same in every process, so
two schedulers see the same ticks. Nothing else of periodiq is changed.
"""

import os
import signal
import time
from types import SimpleNamespace

import dramatiq
import pendulum
import periodiq

from receiptq.broker import PostgresBroker
from receiptq.periodic import periodic_actor

SPEED = float(os.environ["TEST_CLOCK_SPEED"])
ORIGIN = float(os.environ["TEST_CLOCK_ORIGIN"])
FAKE_START = float(os.environ["TEST_CLOCK_FAKE_START"])


def fake_now(tz=None):
    return pendulum.from_timestamp(FAKE_START + (time.time() - ORIGIN) * SPEED, tz="UTC")


def fake_alarm(seconds: int) -> None:
    signal.setitimer(signal.ITIMER_REAL, max(seconds / SPEED, 0.05))


periodiq.pendulum = SimpleNamespace(now=fake_now, parse=pendulum.parse)
periodiq.sleep = lambda seconds: time.sleep(seconds / SPEED)
periodiq.alarm = fake_alarm

broker = PostgresBroker(os.environ["RECEIPTQ_DATABASE_URL"])
dramatiq.set_broker(broker)


@periodic_actor("* * * * *", queue_name="ticks")
def every_minute() -> None:
    """Enqueued each (fake) minute; the test only counts the jobs."""
