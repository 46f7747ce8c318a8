"""Validation of input lines: each bad line gets its line number and a reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batchline.errors import JobRefused, LineError
from batchline.sources import Oversized
from batchline.validation import (
    InvalidLine,
    api_custom_id,
    check_defaults,
    parse_line,
    validate_one,
    validate_stream,
)

D = {"model": "claude-haiku-4-5", "max_tokens": 16}
LIMIT = 10_000


def wire(obj: Any, defaults: dict[str, Any] = D) -> dict[str, Any]:
    return orjson.loads(validate_one(obj, 1, defaults, LIMIT).wire)  # type: ignore[no-any-return]


def test_simple_prompt_becomes_a_native_request_with_defaults() -> None:
    out = wire({"custom_id": "a", "prompt": "hi", "system": "be brief"})
    assert out == {
        "custom_id": "a",
        "params": {
            "max_tokens": 16,
            "messages": [{"content": "hi", "role": "user"}],
            "model": "claude-haiku-4-5",
            "system": "be brief",
        },
    }


def test_native_params_override_defaults_and_messages_form_is_kept() -> None:
    out = wire(
        {
            "custom_id": "a",
            "params": {
                "model": "claude-opus-4-5",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "x"}],
            },
        }
    )
    assert out["params"]["model"] == "claude-opus-4-5" and out["params"]["max_tokens"] == 5
    out = wire({"messages": [{"role": "user", "content": [{"type": "text", "text": "y"}]}]})
    assert out["custom_id"] == "line-1"


def test_invalid_custom_id_is_mapped_and_the_original_kept() -> None:
    req = validate_one({"custom_id": "doc 7/é", "prompt": "x"}, 3, D, LIMIT)
    assert req.custom_id == "doc 7/é" and req.mapped
    assert req.api_id == api_custom_id("doc 7/é") and len(req.api_id) <= 64
    assert orjson.loads(req.wire)["custom_id"] == req.api_id
    assert api_custom_id("ok_id-1") == "ok_id-1"
    assert api_custom_id("x" * 65) != "x" * 65


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ([1, 2], "a line must be a JSON object"),
        ({"prompt": "x", "messages": []}, "exactly one of params, prompt or messages"),
        ({"custom_id": 7, "prompt": "x"}, "custom_id must be a non-empty string"),
        ({"prompt": 5}, "prompt must be a non-empty string"),
        ({"messages": []}, "messages is empty"),
        ({"messages": [{"role": "system", "content": "x"}]}, "role must be 'user' or 'assistant'"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "first message must have role"),
        ({"prompt": "x", "colour": "red"}, "unknown field: colour"),
        (
            {"params": {"messages": [{"role": "user", "content": "x"}], "foo": 1}},
            "unknown field(s) in params: foo",
        ),
        (
            {"params": {"messages": [{"role": "user", "content": "x"}]}, "extra": 1},
            "unknown field(s) beside params: extra",
        ),
        ({"prompt": "x", "stream": True}, "stream: true is not allowed"),
        ({"prompt": "x", "temperature": 0.2}, "temperature not accepted"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens must be an integer of at least 1"),
        ({"prompt": "x", "max_tokens": "5"}, "max_tokens must be an integer of at least 1"),
        ({"prompt": "x", "max_tokens": True}, "max_tokens must be an integer of at least 1"),
        ({"prompt": "x", "model": ""}, "model must be a non-empty string"),
    ],
)
def test_bad_objects_are_refused_with_a_reason(obj: Any, reason: str) -> None:
    with pytest.raises(InvalidLine) as err:
        validate_one(obj, 1, D, LIMIT)
    assert reason in str(err.value)


def test_missing_model_or_max_tokens_without_defaults() -> None:
    with pytest.raises(InvalidLine, match="missing model"):
        validate_one({"prompt": "x"}, 1, {"max_tokens": 5}, LIMIT)
    with pytest.raises(InvalidLine, match="missing max_tokens"):
        validate_one({"prompt": "x"}, 1, {"model": "m"}, LIMIT)


def test_raw_lines_bad_json_invalid_utf8_and_size() -> None:
    with pytest.raises(InvalidLine, match="not valid JSON"):
        parse_line(b'{"prompt": ', 1, D, LIMIT)
    with pytest.raises(InvalidLine, match="not valid UTF-8"):
        parse_line(b'{"prompt": "\xff\xfe"}', 1, D, LIMIT)
    big = orjson.dumps({"prompt": "x" * 600})
    with pytest.raises(InvalidLine, match="over the limit of 500"):
        parse_line(big, 1, D, 500)


def test_stream_reports_each_bad_line_and_keeps_going() -> None:
    items = [(1, b'{"prompt": "a"}'), (2, b"nope"), (3, Oversized(99999)), (4, {"prompt": "b"})]
    out = list(validate_stream(items, D, LIMIT))
    assert [type(o).__name__ for o in out] == ["Request", "LineError", "LineError", "Request"]
    bad = [o for o in out if isinstance(o, LineError)]
    assert (bad[0].line, bad[1].line) == (2, 3)
    assert "99999 bytes" in bad[1].reason


def test_defaults_are_checked() -> None:
    assert check_defaults({"model": "m", "system": "s"}) == {"model": "m", "system": "s"}
    with pytest.raises(JobRefused, match="unknown field"):
        check_defaults({"modle": "m"})
    with pytest.raises(JobRefused):
        check_defaults("m")  # type: ignore[arg-type]


def test_params_key_addresses_content_not_custom_id() -> None:
    a = validate_one({"custom_id": "a", "prompt": "same"}, 1, D, LIMIT)
    b = validate_one({"custom_id": "b", "prompt": "same"}, 2, D, LIMIT)
    c = validate_one({"custom_id": "c", "prompt": "other"}, 3, D, LIMIT)
    assert a.params_key == b.params_key != c.params_key
