"""``python -m receiptq.tools.soak``: see :mod:`receiptq.tools.soak.run`."""

import sys

from receiptq.tools.soak.run import main

sys.exit(main())
