"""``receiptq enqueue ACTOR --args JSON``: send one job, as the actor's ``send()`` would.

The actor must be declared by the app's actor module (``--module``, default
:data:`receiptq.actor_modules.DEFAULT_MODULE`): a job no worker declares would
never run. ``--force`` sends anyway, to ``--queue`` or ``default``.
"""

from __future__ import annotations

import argparse
from typing import Any

from dramatiq.actor import Actor
from dramatiq.message import Message

from receiptq import actor_modules, db
from receiptq.broker import PostgresBroker
from receiptq.cli._common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_command,
    parse_actor_name,
    parse_json_list,
    parse_json_object,
    parse_non_negative_int,
    parse_queue_name,
    print_json,
    url,
    warn,
)
from receiptq.errors import shorten

#: Where ``receiptq enqueue --force`` sends a job of an actor no module declares.
DEFAULT_QUEUE = "default"


def run_enqueue(args: argparse.Namespace) -> int:
    database = url(args)
    actor = _declared_actor(args, database)
    options = {"priority": args.priority, "tier": args.tier, "user_id": args.user}
    if actor is not None:  # what actor.send() would store
        if args.priority is None and actor.priority:
            options["priority"] = actor.priority
        options["max_retries"] = actor.options.get("max_retries")
    message: Message[Any] = Message(
        queue_name=_queue_for(args, actor),
        actor_name=args.actor,
        args=tuple(args.args),
        kwargs=args.kwargs,
        options={key: value for key, value in options.items() if value is not None},
    )
    broker = PostgresBroker(database)
    try:
        broker.declare_queue(message.queue_name)
        # On a connection of our own: a wrong URL fails at once, not after the pool's wait.
        with db.connect(database) as conn, broker.transaction(conn):
            broker.enqueue(message, delay=args.delay_ms)
    finally:
        broker.close()
    if args.json:
        print_json(
            {
                "message_id": message.message_id,
                "queue": message.queue_name,
                "actor": message.actor_name,
                "delay_ms": args.delay_ms,
                "options": message.options,
            }
        )
    else:
        print(message.message_id)
    return EXIT_OK


def _declared_actor(args: argparse.Namespace, database: str) -> Actor[Any, Any] | None:
    """The actor ``args.actor`` as the app's modules declare it; refuse an actor no
    module declares (nothing would run its job) unless ``--force``."""
    modules = args.modules or [actor_modules.DEFAULT_MODULE]
    try:
        actors = actor_modules.declared_actors(modules, database)
    except actor_modules.ModuleImportError as exc:
        if not args.force:
            raise CommandError(
                f"{exc}, so actor {args.actor!r} cannot be checked: name your app's actor "
                "module with --module, or send anyway with --force",
                EXIT_USAGE,
            ) from None
        warn(f"{exc}; sending to {args.actor!r} unchecked (--force)")
        return None
    actor = actors.get(args.actor)
    if actor is None and not args.force:
        known = shorten(", ".join(sorted(actors)) or "none", 160)
        raise CommandError(
            f"no actor {args.actor!r} in {', '.join(modules)} (it declares: {known}): "
            "name your app's actor module with --module, or send anyway with --force",
            EXIT_USAGE,
        )
    if actor is None:
        warn(f"no actor {args.actor!r} in {', '.join(modules)}; sending anyway (--force)")
    return actor


def _queue_for(args: argparse.Namespace, actor: Actor[Any, Any] | None) -> str:
    """``--queue``, else the actor's declared queue, else ``default``."""
    declared = actor.queue_name if actor is not None else None
    if args.queue is not None and declared is not None and args.queue != declared:
        warn(
            f"actor {args.actor!r} is declared on queue {declared!r}; sending to "
            f"{args.queue!r} as --queue says (only workers of {args.queue!r} will see it)"
        )
    return args.queue or declared or DEFAULT_QUEUE


def add_parser(subparsers: Any) -> None:
    """Register ``receiptq enqueue``."""
    enqueue = add_command(subparsers, "enqueue", run_enqueue, "send one job to an actor")
    enqueue.add_argument("actor", type=parse_actor_name, metavar="ACTOR")
    enqueue.add_argument(
        "--args", type=parse_json_list, required=True, metavar="JSON", help="a JSON list"
    )
    enqueue.add_argument(
        "--kwargs", type=parse_json_object, default={}, metavar="JSON", help="a JSON object"
    )
    enqueue.add_argument(
        "--queue",
        type=parse_queue_name,
        help=f"default: the queue the actor is declared on ({DEFAULT_QUEUE!r} with --force)",
    )
    enqueue.add_argument(
        "--module",
        dest="modules",
        action="append",
        metavar="MODULE",
        help="the module that declares the app's actors, as given to the workers "
        f"(repeatable; default: {actor_modules.DEFAULT_MODULE})",
    )
    enqueue.add_argument(
        "--force",
        action="store_true",
        help="send even if no module declares the actor (its job waits for a worker that does)",
    )
    enqueue.add_argument("--priority", type=int, help="lower runs first (default: the actor's)")
    enqueue.add_argument("--delay-ms", type=parse_non_negative_int, help="run no sooner than this")
    enqueue.add_argument("--tier", help="the user's tier, e.g. pro")
    enqueue.add_argument("--user", help="the user's id")
