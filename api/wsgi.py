"""gunicorn's entry point: ``gunicorn api.wsgi:app`` (settings from the environment)."""

from __future__ import annotations

from api import create_app
from app.config import Settings
from app.logs import configure_logging

settings = Settings.from_env()
configure_logging(settings)
app = create_app(settings)
