"""``python -m receiptq.tools.bench --produce``: the steady workload's producer;
``--ceiling``: the ceiling workload's process (which imports no more than it needs)."""

import sys

if "--ceiling" in sys.argv[1:]:
    from receiptq.tools.bench.ceiling import main
else:
    from receiptq.tools.bench.producer import main

sys.exit(main())
