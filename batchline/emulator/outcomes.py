"""What one batched request will produce: its params checked, its directive read, echo and usage."""

from __future__ import annotations

import hashlib
import re
from typing import Any, NamedTuple

import orjson

SUCCEEDED = 0
ERRORED = 1
EXPIRED = 2

# From this anthropic-version on, sampling parameters are refused per request.
STRICT_SAMPLING_VERSION = "2026-10-21"
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")

# The nested error types a result can carry (result.error.error.type).
RESULT_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "rate_limit_error",
        "timeout_error",
        "api_error",
        "overloaded_error",
    }
)

DIRECTIVE_MARK = "[[emulate:"
DIRECTIVE_RE = re.compile(r"\[\[emulate:([a-z-]+)(?::([A-Za-z_]+))?\]\]")
ECHO_PREFIX = "echo: "
CHARS_PER_TOKEN = 4


class RequestRecord(NamedTuple):
    """All the emulator keeps of one request: enough to write its result line."""

    custom_id: str
    outcome: int  # SUCCEEDED, ERRORED or EXPIRED
    text: str  # a success: the last user text (the reply is ECHO_PREFIX + it); else the error
    error_type: str  # "" unless errored
    model: str
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int


def tokens(chars: int) -> int:
    """A deterministic token estimate: one token per four characters, rounded up."""
    return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def strict_sampling(anthropic_version: str | None) -> bool:
    """Whether this anthropic-version refuses temperature, top_p and top_k."""
    return bool(anthropic_version) and str(anthropic_version) >= STRICT_SAMPLING_VERSION


def _failed(custom_id: str, error_type: str, message: str, model: Any = "") -> RequestRecord:
    return RequestRecord(
        custom_id, ERRORED, message, error_type, model if isinstance(model, str) else "", 0, 0, 0, 0
    )


def _params_problem(params: dict[str, Any], strict: bool) -> str | None:
    """Why the Messages API would refuse these params, or None."""
    model = params.get("model")
    if model is None:
        return "model: Field required"
    if type(model) is not str or not model:
        return "model: Input should be a non-empty string"
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        return "max_tokens: Field required"
    if type(max_tokens) is not int:
        return "max_tokens: Input should be a valid integer"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    messages = params.get("messages")
    if messages is None:
        return "messages: Field required"
    if type(messages) is not list or not messages:
        return "messages: Input should be a non-empty list"
    for index, message in enumerate(messages):
        if type(message) is not dict or message.get("role") not in ("user", "assistant"):
            return f"messages.{index}: Input should be a message with role 'user' or 'assistant'"
        if type(message.get("content")) not in (str, list):
            return f"messages.{index}.content: Input should be a string or a list of blocks"
    if params.get("stream"):
        return "stream: Message Batches do not support streaming"
    if strict:
        for name in SAMPLING_PARAMS:
            if params.get(name) is not None:
                return (
                    f"{name}: Extra inputs are not permitted "
                    f"with anthropic-version {STRICT_SAMPLING_VERSION}"
                )
    return None


def _block_text(block: Any) -> str | None:
    if type(block) is not dict:
        return None
    text = block.get("text")
    if type(text) is str:
        return text
    inner = block.get("content")  # a tool_result may carry its text as a plain string
    return inner if type(inner) is str else None


def text_of(content: Any) -> str:
    """A message's text: the string itself, or its text blocks joined by newlines."""
    if type(content) is str:
        return content
    if type(content) is list:
        texts = []
        for block in content:
            if type(block) is dict and block.get("type") == "text":
                text = block.get("text")
                if type(text) is str:
                    texts.append(text)
        return "\n".join(texts)
    return ""


def _blocks_chars(blocks: list[Any]) -> tuple[int, int]:
    """Characters of text in a block list, and the index of its last cache_control block (-1)."""
    chars = 0
    marked = -1
    for index, block in enumerate(blocks):
        text = _block_text(block)
        if text is not None:
            chars += len(text)
        if type(block) is dict and block.get("cache_control") is not None:
            marked = index
    return chars, marked


def measure(contents: list[Any]) -> tuple[int, int, tuple[int, int] | None]:
    """Characters in the system prompt and message contents (in that order), characters up
    to and including the last block marked cache_control, and where that block is."""
    total = cached = 0
    cut: tuple[int, int] | None = None
    for position, content in enumerate(contents):
        if type(content) is str:
            total += len(content)
        elif type(content) is list:
            chars, marked = _blocks_chars(content)
            if marked >= 0:
                cut = (position, marked)
                cached = total + _blocks_chars(content[: marked + 1])[0]
            total += chars
    return total, cached, cut


class Evaluator:
    """Decides the outcome of each request of one create call.

    Registries of "-once" directives and cache prefixes already seen are shared across
    batches; what this batch adds is kept apart and merged by `commit()` once the create
    is accepted, so a refused create leaves no trace.
    """

    def __init__(self, *, strict: bool, once_seen: set[bytes], cache_seen: set[bytes]) -> None:
        self._strict = strict
        self._once_seen = once_seen
        self._cache_seen = cache_seen
        self._new_once: set[bytes] = set()
        self._new_cache: set[bytes] = set()

    def commit(self) -> None:
        self._once_seen |= self._new_once
        self._cache_seen |= self._new_cache

    def evaluate(self, custom_id: str, params: dict[str, Any]) -> RequestRecord:
        problem = _params_problem(params, self._strict)
        model = params.get("model", "")
        if problem is not None:
            return _failed(custom_id, "invalid_request_error", problem, model)
        messages: list[dict[str, Any]] = params["messages"]
        last_text = ""
        for message in reversed(messages):
            if message["role"] == "user":
                last_text = text_of(message["content"])
                break
        forced = self._directive(custom_id, params, last_text)
        if forced is not None:
            return forced
        contents: list[Any] = [params.get("system")]
        contents.extend(message["content"] for message in messages)
        total_chars, cached_chars, cut = measure(contents)
        cache_creation = cache_read = 0
        if cut is not None and cached_chars:
            position, block = cut
            key = hashlib.blake2b(
                orjson.dumps([model, *contents[:position], contents[position][: block + 1]]),
                digest_size=16,
            ).digest()
            if key in self._cache_seen or key in self._new_cache:
                cache_read = tokens(cached_chars)
            else:
                cache_creation = tokens(cached_chars)
                self._new_cache.add(key)
        return RequestRecord(
            custom_id,
            SUCCEEDED,
            last_text,
            "",
            model,
            max(1, tokens(total_chars - cached_chars)),
            min(max(1, tokens(len(ECHO_PREFIX) + len(last_text))), params["max_tokens"]),
            cache_creation,
            cache_read,
        )

    def _directive(self, custom_id: str, params: dict[str, Any], text: str) -> RequestRecord | None:
        """The forced outcome asked for by `[[emulate:...]]`, or None to succeed normally."""
        if DIRECTIVE_MARK not in text:
            return None
        match = DIRECTIVE_RE.search(text)
        if match is None:
            message = "malformed [[emulate:...]] directive"
            return _failed(custom_id, "invalid_request_error", message, params["model"])
        kind, argument = match.groups()
        model = params["model"]
        if kind in ("errored", "errored-once"):
            if argument not in RESULT_ERROR_TYPES:
                message = f"unknown error type {argument!r} in {match.group(0)}"
                return _failed(custom_id, "invalid_request_error", message, model)
            outcome, error_type = ERRORED, argument
        elif kind in ("expired", "expired-once"):
            outcome, error_type = EXPIRED, ""
        else:
            message = f"unknown directive {match.group(0)}"
            return _failed(custom_id, "invalid_request_error", message, model)
        if kind.endswith("-once"):
            key = hashlib.blake2b(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).digest()
            self._new_once.add(key)
            if key in self._once_seen:
                return None
        if outcome == EXPIRED:
            return RequestRecord(custom_id, EXPIRED, "", "", model, 0, 0, 0, 0)
        message = f"Emulated {error_type} requested by {match.group(0)}"
        return _failed(custom_id, error_type, message, model)
