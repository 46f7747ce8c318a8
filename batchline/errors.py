"""Batchline's error tree: retryable versus permanent, translated from HTTP once at the client."""

from __future__ import annotations

from dataclasses import dataclass


class BatchlineError(Exception):
    """Base of every error Batchline raises on purpose."""


@dataclass(frozen=True)
class LineError:
    """One input line that cannot be sent, and why."""

    line: int
    reason: str
    custom_id: str | None = None

    def __str__(self) -> str:
        who = f" ({self.custom_id})" if self.custom_id else ""
        return f"line {self.line}{who}: {self.reason}"

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "custom_id": self.custom_id, "reason": self.reason}


class JobRefused(BatchlineError):
    """Raised when a job is refused before anything is sent: bad input, a budget, a path."""

    def __init__(self, message: str, errors: list[LineError] | None = None):
        self.errors = errors or []
        shown = "; ".join(str(e) for e in self.errors[:20])
        more = f" (and {len(self.errors) - 20} more)" if len(self.errors) > 20 else ""
        super().__init__(f"{message}: {shown}{more}" if shown else message)


class JobConflict(BatchlineError):
    """Raised when a job id is submitted again with different content."""


class JobNotFound(BatchlineError):
    """Raised when a job id is unknown (never submitted, or past its retention)."""


class ApiError(BatchlineError):
    """An error from a call to the Message Batches API."""

    def __init__(self, message: str, *, status: int | None = None, error_type: str | None = None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class RetryableApiError(ApiError):
    """Raised for 429, 5xx, 529, timeouts and dropped connections: try again later."""

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        status: int | None = None,
        error_type: str | None = None,
    ):
        super().__init__(message, status=status, error_type=error_type)
        self.retry_after_s = retry_after_s


class OutcomeUnknown(RetryableApiError):
    """Raised when a create call may or may not have reached the API (response lost)."""


class RateLimited(RetryableApiError):
    """Raised when the fleet's own limiter has no token now; retry_after_s says when."""


class PermanentApiError(ApiError):
    """Raised for 4xx answers that cannot succeed on a retry (bad request, auth, billing)."""


class BatchNotFound(PermanentApiError):
    """Raised when the API answers 404 for a batch."""
