"""Tools around receiptq, not part of the job system: ``receiptq bench``
(:mod:`receiptq.tools.bench`), ``receiptq demo`` (:mod:`receiptq.tools.demo`) and the
chaos run (``python -m receiptq.tools.chaos``).

They sit above the job system (the import-linter contract in pyproject.toml): they
use it as an application would, and nothing in it imports them. Their named queries
live in ``receiptq/tools/queries/*.sql``, loaded the way ``schema/queries`` is
(:func:`receiptq.db.add_queries`) when this package is imported, so that they stay
out of the production namespace. Starting and stopping their ``dramatiq`` worker
processes is :mod:`receiptq.processes`.
"""

from importlib import resources

from receiptq import db

db.add_queries(resources.files(__name__) / "queries")
