"""Input sources (paths, huge lines, uploads) and settings checks."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydantic import ValidationError

from batchline.errors import JobRefused
from batchline.redaction import redact_url
from batchline.settings import Settings
from batchline.sources import Oversized, iter_lines, resolve_source

SECRET = "whsec_YmF0Y2hsaW5lLXRlc3Qtc2VjcmV0LWtleQ=="


def test_source_outside_the_allowed_directory_is_refused(tmp_path: Path) -> None:
    allowed = tmp_path / "in"
    allowed.mkdir()
    (allowed / "ok.jsonl").write_text("{}\n")
    (tmp_path / "secret.jsonl").write_text("{}\n")
    (allowed / "link.jsonl").symlink_to(tmp_path / "secret.jsonl")
    assert resolve_source("ok.jsonl", allowed) == allowed / "ok.jsonl"
    for path in ("../secret.jsonl", str(tmp_path / "secret.jsonl"), "link.jsonl", "/etc/passwd"):
        with pytest.raises(JobRefused, match="outside the allowed directory"):
            resolve_source(path, allowed)
    with pytest.raises(JobRefused, match="not a readable file"):
        resolve_source("missing.jsonl", allowed)


def test_lines_skip_blanks_and_mark_oversized_without_reading_them_whole() -> None:
    data = b'{"a":1}\n\n   \n' + b"x" * 5000 + b"\n" + b'{"b":2}' + b"\n" + b"y" * 101
    out = list(iter_lines(io.BytesIO(data), 100))
    assert out == [(1, b'{"a":1}'), (4, Oversized(5000)), (5, b'{"b":2}'), (6, Oversized(101))]


def test_visibility_timeout_must_exceed_the_longest_countdown() -> None:
    with pytest.raises(ValidationError, match="visibility_timeout_s"):
        Settings(poll_max_interval_s=600, visibility_timeout_s=900)
    assert Settings(poll_max_interval_s=300, visibility_timeout_s=900).max_countdown_s == 360


def test_credentials_are_masked() -> None:
    assert redact_url("redis://:hunter2@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact_url("redis://user:pw@h/1") == "redis://user:***@h/1"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    s = Settings(redis_url="redis://:hunter2@r:6379/0", webhook_secret=SECRET)
    text = str(s.redacted())
    assert "hunter2" not in text and SECRET not in text and "hunter2" not in text
