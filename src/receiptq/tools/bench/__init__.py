"""``receiptq bench``: the peers' two workloads (../shared/peers) run on receiptq.

Workloads, each on a fresh database (``--database``, dropped and created on the
server of the URL, then migrated):

  drain   Enqueue N no-op jobs with ``broker.enqueue_many``, 1000 per call, then
          start the real ``dramatiq`` CLI (``receiptq.tools.bench.worker``) and time
          from the first worker process's ``before_worker_boot`` until the last
          job has run. Also reports when the last ack landed (jobs table empty),
          then times the same bulk send with a ``user_id`` on every job (1000
          users: the jobs get user rounds) to a queue no worker consumes
          (``enqueue_users_jobs_per_s``).
  steady  Workers run; after 20 warm-up jobs, a producer in a process of its own
          enqueues batches of 10 (``enqueue_many``) as fast as it can for T
          seconds. Reports jobs done in the window per second, the producer's
          rate, and the enqueue-to-start latency (p50, p99, nearest rank).
  tiers   The cost and the effect of fair tiers (not run by default). Two drains of
          N jobs, split evenly over the tiers of the policy (``RECEIPTQ_TIERS``,
          default enterprise:6, pro:3, free:1), all enqueued before the workers
          start: (a) plain priority ordering, untiered jobs whose priority is their
          tier's offset (0 / 10 / 20); (b) fair, the same jobs with the tier option.
          ``--rounds`` pairs of these drains run one after the other (plain, fair,
          plain, fair...), so that a slow spell of the machine hits both; reports
          each drain's rate, their medians and the fairness cost, (median plain -
          median fair) / median plain; from the last fair drain,
          each tier's share of the jobs started while every tier still had work
          waiting (until the start of the last job of the tier that ran out first;
          with equal thirds, enterprise), against the weights' share; and each
          tier's p50/p95 wait, from the workers' start (the jobs were queued before
          the workers existed) to the job's start.
  users   Fairness between the users of a tier (not run by default). Two drains of
          N jobs of one tier queued before the workers start; while they drain,
          20 newcomers send one job each (50 ms apart). (a) Without user ids, so
          the tier is FIFO: a newcomer waits behind the flood. (b) The flood sent
          by one user and each newcomer as a user of its own: user rounds put a
          newcomer's job level with the flood's next one. Reports both drain
          rates and the newcomers' p50/p95 wait from send to start.
  backlog Flat cost with a big backlog (not run by default; module
          :mod:`receiptq.tools.bench.backlog`). For each ``--backlog-sizes`` size
          (default 20000,1000000) and each mode, untiered then tiered (the policy's
          tiers in equal parts, each job with one of 1000 user ids per tier, so user
          rounds are in play), on a fresh database: fill the queue with SIZE ready
          jobs, 100,000 jobs due hours later and 10,000 dead letters, by set-based
          SQL whose rows copy what a real ``enqueue_many`` wrote for one message of
          each class (then ANALYZE); run the claim the workers would run there
          (``job_claim_classes_later``, as there are jobs not due yet; a claim of
          threads x 2
          jobs) and ``job_seconds_until_due`` 5 times each under ``EXPLAIN (ANALYZE,
          BUFFERS)`` in a rolled-back transaction: median ms, the indexes the plan
          reads, its buffers; then time the real workers from the first boot to the
          start of the ``--jobs``-th job (the rest of the backlog stays). Reports
          each run's fill time, those figures and drain rate, and per mode the rate
          at the largest size over the rate at the smallest (target >= 0.8).

A job counts as done when its function has run, as for the peers. The worker
processes record that in memory and write it every 50 ms into the bench-only
tables (schema ``bench``), with each job's start time, so that "last done" and
the window's end are exact rather than bounded by a polling interval.

Output: one JSON line per workload on stdout, with the peers' keys, then a
table (left out with ``--json``). Progress goes to stderr. Benchmarks never fail
on speed: the exit status is 1 only when a workload raised an error.

``--workload ceiling`` is Dramatiq's own per-message ceiling, the drain on its
in-memory StubBroker (:mod:`receiptq.tools.bench.ceiling`). ``--compare`` sets the
peers' lines beside receiptq's, ``--markdown`` prints them as a table, ``--plot``
draws them, ``--from-json`` takes receiptq's lines from a file instead of running
(:mod:`receiptq.tools.bench.compare`, :mod:`receiptq.tools.bench.plot`).
"""
