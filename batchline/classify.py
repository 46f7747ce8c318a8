"""What one batch result means for its request: succeeded, failed, canceled, or send again."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from batchline.wire import ErrorInfo

# Errored results worth sending again; every other error type is final.
RETRYABLE_ERROR_TYPES = frozenset(
    {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}
)

Kind = Literal["succeeded", "failed", "canceled", "retry"]


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    message: dict[str, Any] | None = None
    error: ErrorInfo | None = None


EXPIRED = ErrorInfo(type="expired", message="the batch expired before this request was processed")
CANCELED = ErrorInfo(type="canceled", message="the batch was canceled before this request ran")
MISSING = ErrorInfo(type="missing_result", message="the batch's results had no line for it")


def classify_result(result: Any) -> Outcome:
    """Classify a result object ({"type": ...}) from a batch's results, before retry limits."""
    if not isinstance(result, dict):
        return Outcome(
            "failed", error=ErrorInfo(type="invalid_result", message="result is not an object")
        )
    kind = result.get("type")
    if kind == "succeeded":
        return Outcome("succeeded", message=result.get("message") or {})
    if kind == "errored":
        outer: dict[str, Any] = result.get("error") or {}
        nested = outer.get("error")
        inner: dict[str, Any] = nested if isinstance(nested, dict) else outer
        etype = str(inner.get("type") or "unknown_error")
        info = ErrorInfo(type=etype, message=str(inner.get("message") or ""))
        return Outcome("retry" if etype in RETRYABLE_ERROR_TYPES else "failed", error=info)
    if kind == "expired":
        return Outcome("retry", error=EXPIRED)
    if kind == "canceled":
        return Outcome("retry", error=CANCELED)
    return Outcome(
        "failed", error=ErrorInfo(type="invalid_result", message=f"unknown result type {kind!r}")
    )


def decide(outcome: Outcome, *, attempts: int, max_attempts: int, job_canceled: bool) -> Outcome:
    """Apply the job's state and retry budget to a retryable outcome."""
    if outcome.kind != "retry":
        return outcome
    if job_canceled:
        return Outcome("canceled", error=outcome.error)
    if attempts >= max_attempts:
        return Outcome("failed", error=outcome.error)
    return outcome
