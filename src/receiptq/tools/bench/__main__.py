"""``python -m receiptq.tools.bench --produce``: the steady workload's producer."""

import sys

from receiptq.tools.bench.producer import main

sys.exit(main())
