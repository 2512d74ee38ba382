"""The broker's side shared by every process: queue and task names, the Celery client's
configuration, and publishing ``run_trigger`` messages. The web process and the workers
both use it; neither depends on the other's package."""
