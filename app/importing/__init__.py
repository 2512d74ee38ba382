"""Bringing schedules in from elsewhere: a celery beat schedule, django-celery-beat's tables."""
