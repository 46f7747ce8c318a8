"""Batchline: bulk Claude work through the Message Batches API on a fleet of Celery workers."""

from __future__ import annotations

__version__ = "0.1.0"
