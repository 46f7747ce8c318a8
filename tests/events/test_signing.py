"""Signatures: what Batchline signs is what the standardwebhooks package verifies."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from batchline.webhooks import signing

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()
BODY = b'{"id":"evt_1","type":"job.completed","timestamp":"2026-01-01T00:00:00.000Z","data":{}}'


def verify(secret: str, body: bytes, headers: dict[str, str]) -> object:
    """What a receiver does: both the verification error and ValueError mean refused."""
    try:
        return Webhook(secret).verify(body, headers)
    except (WebhookVerificationError, ValueError) as exc:
        return exc


def test_a_signature_verifies_with_the_package_and_fails_on_other_bytes() -> None:
    # Given headers signed over the exact body bytes
    headers = signing.headers("evt_1", int(time.time()), BODY, [SECRET])
    # Then the package verifies them, and refuses a body changed by one byte
    assert verify(SECRET, BODY, headers) == {
        "id": "evt_1",
        "type": "job.completed",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "data": {},
    }
    assert isinstance(verify(SECRET, BODY.replace(b"{}", b"{ }"), headers), Exception)
    assert isinstance(verify(OLD_SECRET, BODY, headers), WebhookVerificationError)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}


def test_two_secrets_during_a_rotation_each_verify() -> None:
    # Given a delivery signed with the new and the old secret
    headers = signing.headers("evt_2", int(time.time()), BODY, [SECRET, OLD_SECRET])
    # Then a receiver holding either one accepts it
    assert headers["webhook-signature"].count("v1,") == 2
    assert not isinstance(verify(SECRET, BODY, headers), Exception)
    assert not isinstance(verify(OLD_SECRET, BODY, headers), Exception)


def test_same_signature_as_the_package_for_a_utc_time() -> None:
    now = int(time.time())
    ours = signing.signature(signing.secret_key(SECRET), "evt_3", now, BODY)
    theirs = Webhook(SECRET).sign("evt_3", datetime.fromtimestamp(now, tz=UTC), BODY.decode())
    assert ours == theirs


def test_the_package_signs_wrongly_with_a_non_utc_aware_datetime_which_we_never_use() -> None:
    # The package replaces the tzinfo instead of converting: a +02:00 time is signed as
    # two hours off. Batchline signs integer epoch seconds, never a datetime.
    now = int(time.time())
    local = datetime.fromtimestamp(now, tz=timezone(timedelta(hours=2)))
    theirs = Webhook(SECRET).sign("evt_4", local, BODY.decode())
    ours = signing.signature(signing.secret_key(SECRET), "evt_4", now, BODY)
    assert theirs != ours
    headers = signing.headers("evt_4", now, BODY, [SECRET])
    assert headers["webhook-timestamp"] == str(now)


@pytest.mark.parametrize(
    "signature",
    ["v1", "v1,not-base64!", "garbage", "v1,abc v2"],
)
def test_a_malformed_signature_header_raises_value_error_that_a_receiver_must_catch(
    signature: str,
) -> None:
    headers = {"webhook-id": "evt_5", "webhook-timestamp": str(int(time.time()))}
    headers["webhook-signature"] = signature
    # The package raises ValueError (not its own error) for some malformed headers
    with pytest.raises((ValueError, WebhookVerificationError)):
        Webhook(SECRET).verify(BODY, headers)
    assert isinstance(verify(SECRET, BODY, headers), Exception)


def test_an_old_timestamp_is_refused() -> None:
    headers = signing.headers("evt_6", int(time.time()) - 3600, BODY, [SECRET])
    assert isinstance(verify(SECRET, BODY, headers), WebhookVerificationError)
