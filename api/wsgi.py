"""gunicorn's entry point: ``gunicorn api.wsgi:app`` (settings from the environment)."""

from __future__ import annotations

from api import create_app

app = create_app()
