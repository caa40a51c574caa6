"""The no-op actor tools/pooler_budget.py drains (``dramatiq pooler_budget_app``)."""

import dramatiq

from receiptq.broker import PostgresBroker

broker = PostgresBroker()  # RECEIPTQ_DATABASE_URL, RECEIPTQ_POOLER from the environment
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="budget", max_retries=0)
def noop(n: int) -> None:
    pass
