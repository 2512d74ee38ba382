"""``python -m cli``: the ``cronbeat`` command."""

from cli.main import main

raise SystemExit(main())
