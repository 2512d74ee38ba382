"""Every bound on a trigger's definition, in one place.

The API's schemas, the database's CHECK constraints (``app.models``, and the tests that
try them), the editing core and the worker all read these; none keeps a copy.
"""

from __future__ import annotations

import datetime as dt

#: (lowest, highest) allowed, both included.
MAX_ATTEMPTS = (1, 100)
BACKOFF_S = (0, 86_400)
#: A webhook attempt's whole wall-clock deadline.
TIMEOUT_S = (1, 3600)
MISFIRE_GRACE_S = (0, 7 * 86_400)
#: An interval schedule's period: from one second (an operator may raise the floor,
#: CRONBEAT_MIN_INTERVAL_S) to a leap year.
INTERVAL_S = (1, 366 * 86_400)

MAX_CRON_CHARS = 200
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32
MAX_TEMPLATE_BYTES = 16 * 1024
MAX_HEADERS = 50
MAX_HEADER_VALUE_BYTES = 1024
#: The largest set one sync accepts.
MAX_SYNC_TRIGGERS = 1000
#: One-time triggers must lie before this instant. Python's datetime ends at year 9999:
#: a run_at near that end cannot be shown in a zone east of UTC (OverflowError), and
#: nothing needs to be scheduled seven millennia ahead.
RUN_AT_LIMIT = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)
