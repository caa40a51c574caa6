"""``python -m receiptq``: the ``receiptq`` command."""

import sys

from receiptq.cli import main

sys.exit(main())
