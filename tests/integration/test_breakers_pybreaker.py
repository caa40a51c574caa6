"""pybreaker's own storage and thread-safety tests, run on the shared breaker.

Adapted from pybreaker 1.4.1, tests/pybreaker_test.py
(https://github.com/danielfm/pybreaker, tag v1.4.1; BSD 3-clause licence,
Copyright (c) 2010-2021, Daniel Fernandes Martins). The test bodies are
pybreaker's, and so are the names, so that a failure here maps to the upstream
test; what changed:

- ``CircuitBreakerStorageBasedTestCase``: every ``CircuitBreaker(...,
  state_storage=...)`` is a :class:`SharedCircuitBreaker` on a
  :class:`PostgresBreakerStorage` row (the ``breaker`` fixture and
  ``make_breaker``), with unittest's classes turned into pytest functions.
- The thread-safety tests are the ``CircuitBreakerRedisConcurrencyTestCase``
  ones (the storage-based variant), with a tenth of the calls (each is a few
  database round trips here, not a dict update: 3 x 50 instead of 3 x 500, a
  fail_max of 300 instead of 3000), except that ``test_fail_max_thread_safety``
  asserts pybreaker's in-memory bound (exactly ``fail_max`` failures, not fewer
  than ``fail_max`` + threads): the shared breaker meets it within a process. pybreaker's
  ``test_half_open_thread_safety`` uses a memory breaker whatever the class; here
  it runs on the shared storage with a reset timeout long enough that the five
  threads meet one half-open period, and also counts the calls made.
- Left out: tests of pybreaker's memory or Redis storage internals, its
  configuration (no storage involved) and tornado's ``call_async``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import sleep
from types import MethodType
from typing import Any
from unittest import mock

import pytest
from pybreaker import CircuitBreakerError, CircuitBreakerListener

from receiptq.broker import PostgresBroker
from receiptq.middleware.breakers import (
    BreakerSettings,
    PostgresBreakerStorage,
    SharedCircuitBreaker,
)

MakeBreaker = Callable[..., SharedCircuitBreaker]


@pytest.fixture
def make_breaker(database_url: str) -> Iterator[MakeBreaker]:
    """pybreaker's ``CircuitBreaker(**kwargs)`` on one shared row ("pybreaker")."""
    broker = PostgresBroker(database_url)

    def make(fail_max: int = 5, reset_timeout: float = 60, **kwargs: Any) -> SharedCircuitBreaker:
        settings = BreakerSettings(fail_max, reset_timeout)
        storage = PostgresBreakerStorage("pybreaker", broker.pool_connection, settings)
        return SharedCircuitBreaker(
            fail_max=fail_max, reset_timeout=reset_timeout, state_storage=storage, **kwargs
        )

    yield make
    broker.close()


@pytest.fixture
def breaker(make_breaker: MakeBreaker) -> SharedCircuitBreaker:
    return make_breaker()


# -- CircuitBreakerStorageBasedTestCase ----------------------------------------------


def test_successful_call(breaker):
    def func():
        return True

    assert breaker.call(func)
    assert breaker.fail_counter == 0
    assert breaker.current_state == "closed"


def test_one_failed_call(breaker):
    def func():
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        breaker.call(func)
    assert breaker.fail_counter == 1
    assert breaker.current_state == "closed"


def test_one_successful_call_after_failed_call(breaker):
    def suc():
        return True

    def err():
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        breaker.call(err)
    assert breaker.fail_counter == 1

    assert breaker.call(suc)
    assert breaker.fail_counter == 0
    assert breaker.current_state == "closed"


def test_several_failed_calls_setting_absent(make_breaker):
    breaker = make_breaker(fail_max=3)

    def func():
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        breaker.call(func)
    with pytest.raises(NotImplementedError):
        breaker.call(func)

    # Circuit should open
    with pytest.raises(CircuitBreakerError):
        breaker.call(func)
    assert breaker.fail_counter == 3
    assert breaker.current_state == "open"


def test_throw_new_error_on_trip_false(make_breaker):
    breaker = make_breaker(fail_max=3, throw_new_error_on_trip=False)

    def func():
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        breaker.call(func)
    with pytest.raises(NotImplementedError):
        breaker.call(func)
    with pytest.raises(NotImplementedError):
        breaker.call(func)

    # Circuit should be open
    assert breaker.fail_counter == 3
    assert breaker.current_state == "open"

    # Circuit should still be open and break
    with pytest.raises(CircuitBreakerError):
        breaker.call(func)
    assert breaker.fail_counter == 3
    assert breaker.current_state == "open"


def test_throw_new_error_on_trip_true(make_breaker):
    breaker = make_breaker(fail_max=3, throw_new_error_on_trip=True)

    def func():
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        breaker.call(func)
    with pytest.raises(NotImplementedError):
        breaker.call(func)

    # Circuit should open
    with pytest.raises(CircuitBreakerError):
        breaker.call(func)
    assert breaker.fail_counter == 3
    assert breaker.current_state == "open"


def test_traceback_in_circuitbreaker_error(make_breaker):
    breaker = make_breaker(fail_max=3)

    def func():
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        breaker.call(func)
    with pytest.raises(NotImplementedError):
        breaker.call(func)

    # Circuit should open
    try:
        breaker.call(func)
        pytest.fail("CircuitBreakerError should throw")
    except CircuitBreakerError:
        import traceback

        assert "NotImplementedError" in traceback.format_exc()
    assert breaker.fail_counter == 3
    assert breaker.current_state == "open"


def test_failed_call_after_timeout(make_breaker):
    breaker = make_breaker(fail_max=3, reset_timeout=0.5)

    def func():
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        breaker.call(func)
    with pytest.raises(NotImplementedError):
        breaker.call(func)
    assert breaker.current_state == "closed"

    # Circuit should open
    with pytest.raises(CircuitBreakerError):
        breaker.call(func)
    assert breaker.fail_counter == 3

    # Wait for timeout
    sleep(0.6)

    # Circuit should open again
    with pytest.raises(CircuitBreakerError):
        breaker.call(func)
    assert breaker.fail_counter == 4
    assert breaker.current_state == "open"


def test_successful_after_timeout(make_breaker):
    breaker = make_breaker(fail_max=3, reset_timeout=1)

    suc = mock.MagicMock(return_value=True)

    def err():
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        breaker.call(err)
    with pytest.raises(NotImplementedError):
        breaker.call(err)
    assert breaker.current_state == "closed"

    # Circuit should open
    with pytest.raises(CircuitBreakerError):
        breaker.call(err)
    with pytest.raises(CircuitBreakerError):
        breaker.call(suc)
    assert breaker.fail_counter == 3

    # Wait for timeout, at least a second since redis rounds to a second
    sleep(2)

    # Circuit should close again
    assert breaker.call(suc)
    assert breaker.fail_counter == 0
    assert breaker.current_state == "closed"
    assert suc.call_count == 1


def test_failed_call_when_halfopen(breaker):
    def fun():
        raise NotImplementedError

    breaker.half_open()
    assert breaker.fail_counter == 0
    assert breaker.current_state == "half-open"

    # Circuit should open
    with pytest.raises(CircuitBreakerError):
        breaker.call(fun)
    assert breaker.fail_counter == 1
    assert breaker.current_state == "open"


def test_successful_call_when_halfopen(breaker):
    def fun():
        return True

    breaker.half_open()
    assert breaker.fail_counter == 0
    assert breaker.current_state == "half-open"

    # Circuit should open
    assert breaker.call(fun)
    assert breaker.fail_counter == 0
    assert breaker.current_state == "closed"


def test_close(make_breaker):
    breaker = make_breaker(fail_max=3)

    def func():
        raise NotImplementedError

    with pytest.raises(NotImplementedError):
        breaker.call(func)
    with pytest.raises(NotImplementedError):
        breaker.call(func)

    # Circuit should open
    with pytest.raises(CircuitBreakerError):
        breaker.call(func)
    with pytest.raises(CircuitBreakerError):
        breaker.call(func)
    assert breaker.fail_counter == 3
    assert breaker.current_state == "open"

    # Circuit should close again
    breaker.close()
    assert breaker.fail_counter == 0
    assert breaker.current_state == "closed"


def test_transition_events(make_breaker):
    class Listener(CircuitBreakerListener):
        def __init__(self):
            self.out = ""

        def state_change(self, cb, old_state, new_state):
            assert cb
            if old_state:
                self.out += old_state.name
            if new_state:
                self.out += "->" + new_state.name
            self.out += ","

    listener = Listener()
    breaker = make_breaker(listeners=(listener,))
    assert breaker.current_state == "closed"

    breaker.open()
    assert breaker.current_state == "open"

    breaker.half_open()
    assert breaker.current_state == "half-open"

    breaker.close()
    assert breaker.current_state == "closed"

    assert listener.out == "closed->open,open->half-open,half-open->closed,"


def test_call_events(make_breaker):
    def suc():
        return True

    def err():
        raise NotImplementedError

    class Listener(CircuitBreakerListener):
        def __init__(self):
            self.out = ""

        def before_call(self, cb, func, *args, **kwargs):
            assert cb
            self.out += "-"

        def success(self, cb):
            assert cb
            self.out += "success"

        def failure(self, cb, exc):
            assert cb
            assert exc
            self.out += "failure"

    listener = Listener()
    breaker = make_breaker(listeners=(listener,))

    assert breaker.call(suc)
    with pytest.raises(NotImplementedError):
        breaker.call(err)
    assert listener.out == "-success-failure"


def test_generator(breaker):
    @breaker
    def suc(value):
        "Docstring"
        yield value

    @breaker
    def err(value):
        "Docstring"
        x = yield value
        raise NotImplementedError(x)

    s = suc(True)
    e = err(True)
    next(e)

    with pytest.raises(NotImplementedError):
        e.send(True)
    assert breaker.fail_counter == 1
    assert next(s)
    with pytest.raises((StopIteration, RuntimeError)):
        next(s)
    assert breaker.fail_counter == 0


def test_contextmanager(breaker):
    class Foo:
        @contextmanager
        @breaker
        def wrapper(self):
            try:
                yield
            except NotImplementedError:
                raise ValueError from None

        def foo(self):
            with self.wrapper():
                raise NotImplementedError

    try:
        Foo().foo()
    except ValueError as e:
        assert isinstance(e, ValueError)


def test_success_threshold_default_behavior(make_breaker):
    breaker = make_breaker(fail_max=3, reset_timeout=0.1)

    def fun():
        return True

    def err():
        raise NotImplementedError

    # Open the circuit
    for i in range(3):
        if i < 2:
            with pytest.raises(NotImplementedError):
                breaker.call(err)
        else:
            with pytest.raises(CircuitBreakerError):
                breaker.call(err)

    # Wait for timeout to enter half-open state
    sleep(0.2)

    # Single successful call should close the circuit (default behavior)
    assert breaker.call(fun)
    assert breaker.current_state == "closed"
    assert breaker.success_counter == 0  # Should be reset when closed


def test_success_threshold_multiple_successes_required(make_breaker):
    breaker = make_breaker(fail_max=3, reset_timeout=0.1, success_threshold=3)

    def fun():
        return True

    def err():
        raise NotImplementedError

    # Open the circuit
    for i in range(3):
        if i < 2:
            with pytest.raises(NotImplementedError):
                breaker.call(err)
        else:
            with pytest.raises(CircuitBreakerError):
                breaker.call(err)

    # Wait for timeout to enter half-open state
    sleep(0.2)

    # First successful call should not close the circuit
    assert breaker.call(fun)
    assert breaker.current_state == "half-open"
    assert breaker.success_counter == 1

    # Second successful call should not close the circuit
    assert breaker.call(fun)
    assert breaker.current_state == "half-open"
    assert breaker.success_counter == 2

    # Third successful call should close the circuit
    assert breaker.call(fun)
    assert breaker.current_state == "closed"
    assert breaker.success_counter == 0  # Should be reset when closed


def test_success_threshold_failure_resets_counter(make_breaker):
    breaker = make_breaker(fail_max=3, reset_timeout=0.1, success_threshold=3)

    def fun():
        return True

    def err():
        raise NotImplementedError

    # Open the circuit
    for i in range(3):
        if i < 2:
            with pytest.raises(NotImplementedError):
                breaker.call(err)
        else:
            with pytest.raises(CircuitBreakerError):
                breaker.call(err)

    # Wait for timeout to enter half-open state
    sleep(0.2)

    # First successful call
    assert breaker.call(fun)
    assert breaker.current_state == "half-open"
    assert breaker.success_counter == 1

    # Second successful call
    assert breaker.call(fun)
    assert breaker.current_state == "half-open"
    assert breaker.success_counter == 2

    # Failure should reset success counter and open circuit
    with pytest.raises(CircuitBreakerError):
        breaker.call(err)
    assert breaker.current_state == "open"
    assert breaker.success_counter == 0  # Should be reset when opened


# -- thread safety (CircuitBreakerRedisConcurrencyTestCase) ----------------------------


def _start_threads(target, n):
    """Starts `n` threads that calls `target` and waits for them to finish."""
    threads = [threading.Thread(target=target) for i in range(n)]
    [t.start() for t in threads]
    [t.join() for t in threads]


@pytest.fixture
def busy_breaker(make_breaker: MakeBreaker) -> SharedCircuitBreaker:
    return make_breaker(fail_max=300, reset_timeout=1)


def test_fail_thread_safety(busy_breaker):
    breaker = busy_breaker

    # Create a specific exception to avoid masking other errors
    class SpecificException(Exception):
        pass

    @breaker
    def err():
        raise SpecificException

    def trigger_error():
        for _ in range(50):
            try:
                err()
            except SpecificException:
                pass

    def _inc_counter(self):
        sleep(0.00005)
        self._state_storage.increment_counter()

    breaker._inc_counter = MethodType(_inc_counter, breaker)
    _start_threads(trigger_error, 3)
    assert breaker.fail_counter == 150


def test_success_thread_safety(busy_breaker):
    breaker = busy_breaker

    @breaker
    def suc():
        return True

    def trigger_success():
        for _ in range(50):
            suc()

    class SuccessListener(CircuitBreakerListener):
        def success(self, cb):
            c = 0
            if hasattr(cb, "_success_counter"):
                c = cb._success_counter
            sleep(0.00005)
            cb._success_counter = c + 1

    breaker.add_listener(SuccessListener())
    _start_threads(trigger_success, 3)
    assert breaker._success_counter == 150


def test_half_open_thread_safety(make_breaker):
    # Adapted: the shared storage, a reset timeout of 2 s instead of 10 ms (the
    # threads must meet one half-open period, not several), and the calls counted.
    breaker = make_breaker(fail_max=1, reset_timeout=2)

    breaker.open()
    sleep(2.1)
    calls = []

    @breaker
    def err():
        calls.append(1)
        raise Exception

    def trigger_failure():
        try:
            err()
        except:  # noqa: E722 (pybreaker's)
            pass

    class StateListener(CircuitBreakerListener):
        def __init__(self):
            self._count = 0

        def before_call(self, cb, fun, *args, **kwargs):
            sleep(0.00005)

        def state_change(self, cb, old_state, new_state):
            if new_state.name == "half-open":
                self._count += 1

    state_listener = StateListener()
    breaker.add_listener(state_listener)

    _start_threads(trigger_failure, 5)
    assert state_listener._count == 1
    assert calls == [1]  # added: one trial call


def test_fail_max_thread_safety(busy_breaker):
    # pybreaker's CircuitBreakerThreadsTestCase bound (its Redis variant allows
    # fail_max + threads - 1).
    breaker = busy_breaker

    @breaker
    def err():
        raise Exception

    def trigger_error():
        for _ in range(200):
            try:
                err()
            except:  # noqa: E722 (pybreaker's)
                pass

    class SleepListener(CircuitBreakerListener):
        def before_call(self, cb, func, *args, **kwargs):
            sleep(0.00005)

    breaker.add_listener(SleepListener())
    _start_threads(trigger_error, 3)
    assert breaker.fail_max == breaker.fail_counter
