"""Print the OpenAPI document: ``python -m api.openapi > openapi.json``.

The document depends on the code only, so it is built from placeholder settings: nothing
connects anywhere.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from app.config import Settings

_OFFLINE = Settings(database_url="postgresql+psycopg2://offline/offline",
                    redis_url="redis://offline:6379/0")


def spec_dict() -> dict[str, Any]:
    """Return the API's OpenAPI document as a dict."""
    from api import create_app

    app = create_app(_OFFLINE)
    with app.app_context():
        return app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict()


def spec_text() -> str:
    """Return the document exactly as ``openapi.json`` in the repository stores it."""
    return json.dumps(spec_dict(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    sys.stdout.write(spec_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
