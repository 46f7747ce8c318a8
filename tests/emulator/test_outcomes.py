"""Outcome directives, the echo reply and its deterministic usage."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.emulator.conftest import req, results_by_id, wait_ended

RESULT_ERROR_TYPES = [
    "invalid_request_error",
    "authentication_error",
    "billing_error",
    "permission_error",
    "not_found_error",
    "rate_limit_error",
    "timeout_error",
    "api_error",
    "overloaded_error",
]


def _run(client: anthropic.Anthropic, requests: list[Any]) -> tuple[Any, dict[str, Any]]:
    batch = client.messages.batches.create(requests=requests)
    ended = wait_ended(client, batch.id)
    return ended, results_by_id(client, batch.id)


def test_errored_directive_forces_each_error_type(client, emu) -> None:
    # Given one request per error type, plus one plain request
    requests = [
        req(f"e{i}", f"please [[emulate:errored:{t}]]") for i, t in enumerate(RESULT_ERROR_TYPES)
    ]
    requests.append(req("plain", "just text"))
    ended, results = _run(client, requests)
    # Then each errors with its type, nested as the API nests it
    assert ended.request_counts.errored == len(RESULT_ERROR_TYPES)
    assert ended.request_counts.succeeded == 1
    for i, error_type in enumerate(RESULT_ERROR_TYPES):
        result = results[f"e{i}"]
        assert result.type == "errored"
        assert result.error.type == "error"
        assert result.error.error.type == error_type
    assert results["plain"].message.content[0].text == "echo: just text"


def test_unknown_error_type_in_a_directive_is_an_invalid_request(client, emu) -> None:
    _, results = _run(client, [req("a", "[[emulate:errored:made_up_error]]")])
    assert results["a"].error.error.type == "invalid_request_error"
    assert "made_up_error" in results["a"].error.error.message


def test_expired_directive(client, emu) -> None:
    ended, results = _run(client, [req("gone", "[[emulate:expired]]"), req("ok")])
    assert ended.request_counts.expired == 1
    assert results["gone"].type == "expired"
    assert results["ok"].type == "succeeded"


@pytest.mark.parametrize(
    ("directive", "first_type"),
    [
        ("[[emulate:errored-once:overloaded_error]]", "errored"),
        ("[[emulate:expired-once]]", "expired"),
    ],
)
def test_once_directives_fail_first_then_succeed_when_resubmitted(
    client, emu, directive: str, first_type: str
) -> None:
    text = f"retry me {directive}"
    # Given a request with a "-once" directive, sent twice in the same first batch
    _, first = _run(client, [req("a", text), req("twin", text)])
    # Then both copies fail that first time
    assert first["a"].type == first_type
    assert first["twin"].type == first_type
    # When the same request is submitted again in a later batch (any custom_id)
    _, second = _run(client, [req("a-retry", text), req("other", f"{directive} different")])
    # Then it succeeds, while a request with other params still fails its first time
    assert second["a-retry"].type == "succeeded"
    assert second["a-retry"].message.content[0].text == f"echo: {text}"
    assert second["other"].type == first_type
    if first_type == "errored":
        assert first["a"].error.error.type == "overloaded_error"


def test_once_directive_is_keyed_on_the_params(client, emu) -> None:
    text = "[[emulate:errored-once:api_error]]"
    _run(client, [req("a", text, max_tokens=10)])
    _, results = _run(client, [req("a", text, max_tokens=11), req("b", text, max_tokens=10)])
    assert results["a"].type == "errored"  # other params: a first sighting
    assert results["b"].type == "succeeded"  # same params, other custom_id: seen before


def test_echo_uses_the_last_user_message_text_blocks(client, emu) -> None:
    params = {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "system": "be brief",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "part one"},
                    {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}},
                    {"type": "text", "text": "part two"},
                ],
            },
        ],
    }
    _, results = _run(client, [{"custom_id": "multi", "params": params}])
    message = results["multi"].message
    assert message.content[0].text == "echo: part one\npart two"
    assert message.model == "claude-haiku-4-5"


def test_usage_is_derived_from_the_text_and_capped_by_max_tokens(client, emu) -> None:
    long_text = "z" * 400
    _, results = _run(
        client,
        [
            req("short", "abcd"),
            req("long", long_text, max_tokens=1000),
            req("capped", long_text, max_tokens=7),
            req("with_system", "abcd", system="s" * 40),
        ],
    )
    usage = {cid: result.message.usage for cid, result in results.items()}
    assert usage["short"].input_tokens == 1  # 4 characters
    assert usage["long"].input_tokens == 100
    assert usage["long"].output_tokens == (len("echo: ") + 400 + 3) // 4
    assert usage["capped"].output_tokens == 7
    assert usage["with_system"].input_tokens == usage["short"].input_tokens + 10
    # And the same request gives the same usage every time
    _, again = _run(client, [req("long", long_text, max_tokens=1000)])
    assert again["long"].message.usage.input_tokens == usage["long"].input_tokens
    assert again["long"].message.usage.output_tokens == usage["long"].output_tokens


def test_cache_control_writes_then_reads_the_cache(client, emu) -> None:
    system = [{"type": "text", "text": "c" * 80, "cache_control": {"type": "ephemeral"}}]
    first_batch = [req("writer", "question one", system=system)]
    _, first = _run(client, first_batch)
    _, second = _run(client, [req("reader", "question two", system=system)])
    written = first["writer"].message.usage
    read = second["reader"].message.usage
    assert written.cache_creation_input_tokens == 20 and written.cache_read_input_tokens == 0
    assert read.cache_read_input_tokens == 20 and read.cache_creation_input_tokens == 0
    assert written.input_tokens == (len("question one") + 3) // 4
