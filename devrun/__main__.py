"""``python -m devrun``: what ``make run`` starts."""

import sys

from devrun.supervisor import main

sys.exit(main())
