"""Cronbeat: scheduled triggers stored in PostgreSQL, fired exactly once through Celery."""
