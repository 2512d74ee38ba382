"""Bringing schedules in from elsewhere (celery beat)."""
