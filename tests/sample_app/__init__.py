"""A Celery user's own app, as a shop moving to Cronbeat has it (tests run its worker)."""
