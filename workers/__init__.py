"""Batchline's Celery application and worker runtime (`celery -A workers worker`)."""

from __future__ import annotations

from workers.app import app

__all__ = ["app"]
