"""The web process: the live dashboard, its JSON API and the Prometheus metrics.

Every figure comes from :mod:`receiptq.monitor`, the module behind ``receiptq
status``, so the page, ``/metrics`` and the CLI never disagree.
"""
