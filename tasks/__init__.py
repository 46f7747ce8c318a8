"""Batchline's Celery tasks, one module per pipeline stage, each named `batchline.<name>`."""
