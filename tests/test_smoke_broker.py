import dramatiq

from receiptq import db


def test_job_runs_and_leaves_the_table(broker, worker, conn):
    seen = []

    @dramatiq.actor(queue_name="smoke")
    def remember(value):
        seen.append(value)

    remember.send(7)
    broker.join("smoke", timeout=10_000)
    assert seen == [7]
    assert db.fetch_one(conn, "job_count_unfinished", {"queue": "smoke"})["jobs"] == 0
