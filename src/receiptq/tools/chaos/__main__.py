"""``python -m receiptq.tools.chaos``: see :mod:`receiptq.tools.chaos.run`."""

import sys

from receiptq.tools.chaos.command import main

sys.exit(main())
