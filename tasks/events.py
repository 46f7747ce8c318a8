"""Event and webhook delivery tasks (the events queue)."""

from __future__ import annotations
