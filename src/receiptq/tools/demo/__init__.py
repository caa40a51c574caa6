"""``receiptq demo``: the receipt pipeline end to end, on real Dramatiq worker processes.

It runs in a database of its own (:mod:`receiptq.tools.demo.database`: the embedded
PostgreSQL when no URL is set, else a ``receiptq_demo`` database next to the
URL's) and never touches data it did not create: it refuses a database with
others' jobs, dead letters or receipts unless ``--allow-existing-data``, and
even then counts and deletes only what it marked as its own. It migrates (both
chains), clears what a previous demo left, generates N receipt images (Pillow:
varied merchants, items, dates, layouts and fonts, some photographed badly) and
the users' bank transactions (most receipts have theirs, some deliberately none,
a few uploads are not images at all), starts an SMTP sink (aiosmtpd on
127.0.0.1), submits every receipt (image, row and pipeline in one transaction
each, users of mixed tiers) on queues of its own (``demo.ocr``, ...), and runs
``dramatiq receiptq.actors`` on those queues while a live view shows the
receipts and queues. The summary checks the outcome against the generated
truth, from what this run submitted: receipts processed, matched correctly,
emails delivered, jobs retried, postponed by an open circuit breaker, dead
letters, receipts per status and stuck (nothing will process them: a job of
theirs is a dead letter, or none is left), throughput (``--json``: as JSON).
``--fail-rate`` makes the OCR and SMTP services fail part of the time. Each
run's worker log and summary go to a folder of its own under
``RECEIPTQ_HOME/demo``. The embedded server is stopped at the end when the demo
started it. Exit status 0 when every receipt was accounted for.
"""
