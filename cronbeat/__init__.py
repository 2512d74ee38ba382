"""What Cronbeat gives a Celery app of your own: ``cronbeat.celery.install(app)``."""
