"""Why a webhook delivery attempt did not succeed: refused, not configured, or failed."""

from __future__ import annotations

from batchline.errors import BatchlineError


class WebhookError(BatchlineError):
    """Base of the errors of a webhook delivery or registration."""


class UnsafeUrl(WebhookError):
    """Raised when a webhook URL is malformed or resolves to an address it must not reach."""


class NotConfigured(WebhookError):
    """Raised when an endpoint has no secret to sign with, or its subscription was removed."""


class DeliveryFailed(WebhookError):
    """Raised when an attempt got no 2xx answer: connection error, timeout or status code."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ):
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s
