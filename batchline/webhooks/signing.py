"""Standard Webhooks signatures: HMAC-SHA256 over `id.timestamp.body` with whsec_ secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX) + "==")


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of exactly these bytes."""
    signed = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def headers(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """The three Standard Webhooks headers; one signature per secret (two during a rotation).

    `timestamp` is whole seconds since the epoch (UTC by definition): never derived from a
    local or non-UTC datetime, which would shift the signed time by the UTC offset.
    """
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    sigs = " ".join(signature(secret_key(s), msg_id, timestamp, body) for s in secrets)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": sigs}
