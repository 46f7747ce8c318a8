"""Structured logging: one line per state change, with job, batch and custom_id; JSON on request."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from batchline.settings import Settings

LOGGER = logging.getLogger("batchline")
FIELDS = ("job_id", "chunk", "batch_id", "custom_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """`event key=value ...` after the usual time and level."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = getattr(record, "fields", {})
        if fields:
            base += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return base


class QuietTaskLines(logging.Filter):
    """Celery's per-task lines that tell no state change, moved to DEBUG (dropped at INFO):
    the received and succeeded lines of the tasks named, and the retry line of a step that
    waits (a countdown, not a fault: Defer). A task's failure lines are left as they are."""

    def __init__(self, tasks: frozenset[str]):
        super().__init__()
        self.tasks = tasks

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = record.args
        if record.levelno != logging.INFO or not isinstance(ctx, dict):
            return True
        if ctx.get("name") not in self.tasks and "Defer(" not in str(ctx.get("exc", "")):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


# The HTTP clients the SDK logs through (its own httpx2, and httpx).
HTTP_LOGGERS = ("httpx", "httpx2")
# Where Celery logs a task's received line, and its succeeded and retry lines.
CELERY_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def quiet_task_lines(tasks: frozenset[str]) -> None:
    """Install QuietTaskLines on Celery's task loggers (once)."""
    for name in CELERY_TASK_LOGGERS:
        logger = logging.getLogger(name)
        logger.filters = [f for f in logger.filters if not isinstance(f, QuietTaskLines)]
        logger.addFilter(QuietTaskLines(tasks))


def setup(settings: Settings) -> None:
    """Send Batchline's log lines to stderr, as text or JSON (BATCHLINE_LOG_JSON)."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("[%(asctime)s: %(levelname)s/%(name)s] %(message)s"))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(settings.log_level.upper())
    LOGGER.propagate = False
    # The SDK's HTTP client logs every call at INFO (each poll); Batchline logs what they
    # change, and API errors itself.
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.DEBUG if LOGGER.level <= logging.DEBUG else logging.WARNING
        )


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one state change: `event(\"batch.created\", job_id=..., batch_id=...)`."""
    clean = {k: v for k, v in fields.items() if v is not None}
    LOGGER.log(level, name, extra={"fields": clean})


def warning(name: str, **fields: Any) -> None:
    event(name, logging.WARNING, **fields)
