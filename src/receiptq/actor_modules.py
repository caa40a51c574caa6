"""The actors an app declares, found as a worker finds them: by importing its modules.

``receiptq enqueue`` uses this to send a job to the queue its actor is declared
on and to refuse an actor that no module declares (a job nothing would run).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import dramatiq
import dramatiq.broker

from receiptq.errors import ReceiptqError, shorten
from receiptq.settings import DATABASE_URL_VARIABLES, environment_with

#: The module the workers import when told none (``dramatiq receiptq.actors``).
DEFAULT_MODULE = "receiptq.actors"


class ModuleImportError(Exception):
    """An actor module could not be imported; the message says which and why."""


def declared_actors(modules: Sequence[str], url: str) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Import ``modules``; return the actors they declare, by name.

    While the modules import, the environment names ``url`` as the database, so a
    module that reads it on import uses the database of the command and starts
    nothing else; the global broker is restored afterwards. The actors are those
    of the broker a module set, those bound to a name in the modules (or modules
    they imported), and those of brokers bound to a name there.
    """
    before = set(sys.modules)
    with _importing_for(url) as imported_broker:
        for name in modules:
            _import(name)
    found: dict[str, dramatiq.Actor[Any, Any]] = {}
    broker = imported_broker()
    if broker is not None:
        found.update({name: broker.get_actor(name) for name in broker.get_declared_actors()})
    for module in _modules_of(modules, set(sys.modules) - before):
        for value in list(vars(module).values()):
            if isinstance(value, dramatiq.Actor):
                found.setdefault(value.actor_name, value)
            elif isinstance(value, dramatiq.Broker):  # e.g. receiptq.actors' broker
                for name in value.get_declared_actors():
                    found.setdefault(name, value.get_actor(name))
    return found


def _import(name: str) -> None:
    try:
        importlib.import_module(name)
    except ReceiptqError:
        raise  # a bad setting or database: its own one line says what to do
    except Exception as exc:
        reason = shorten(f"{type(exc).__name__}: {exc}".splitlines()[0], 160)
        raise ModuleImportError(f"cannot import {name} ({reason})") from None


@contextmanager
def _importing_for(url: str) -> Iterator[Any]:
    """The environment and path a worker would import with; yields a function that
    returns the broker the imports set globally (None if they set none)."""
    saved_broker = dramatiq.broker.global_broker
    cwd_added = os.getcwd() not in sys.path
    if cwd_added:  # as the dramatiq CLI does: the app's package is found from here
        sys.path.insert(0, os.getcwd())
    broker: list[Any] = [None]
    try:
        with environment_with(**{DATABASE_URL_VARIABLES[0]: url}):
            yield lambda: broker[0]
    finally:
        if dramatiq.broker.global_broker is not saved_broker:
            broker[0] = dramatiq.broker.global_broker
        dramatiq.broker.global_broker = saved_broker
        if cwd_added:
            sys.path.remove(os.getcwd())


def _modules_of(names: Sequence[str], new: set[str]) -> Iterator[ModuleType]:
    """The named modules, their submodules, and every module their import loaded."""
    for key, module in list(sys.modules.items()):
        in_package = any(key == name or key.startswith(name + ".") for name in names)
        if module is not None and (in_package or key in new):
            yield module
