"""Input validation: one JSONL line, row or dict in, a ready-to-send batch request (or a
reason) out. Rows of a table become requests through the job's templates (RowSpec)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, get_type_hints

import orjson

from batchline.chunking import TAG_BYTES
from batchline.errors import JobRefused, LineError
from batchline.sources import BadRow, Oversized
from batchline.templates import RowRefused, Template

API_CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAPPED_PREFIX = "bl-"
# The API allows 64 characters; the chunk's tag takes the last TAG_BYTES of them.
MAX_API_ID_CHARS = 64 - TAG_BYTES

# Refused under the API version the SDK sends (2026-10-21 and later).
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")


@cache
def known_params() -> frozenset[str]:
    """The Messages API parameters the installed SDK knows; anything else is refused per
    line, because the API would answer it with an invalid_request_error after the batch ran.
    (Read from the SDK on first use: importing it is slow, and most workers never validate.)"""
    from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

    return frozenset(get_type_hints(MessageCreateParamsNonStreaming)) - {
        "stream",
        "workspace_id",
        "user_profile_id",
    }


@cache
def api_version() -> str:
    """The anthropic-version the installed SDK sends."""
    from anthropic._constants import ANTHROPIC_API_VERSION

    return ANTHROPIC_API_VERSION


def sampling_refused() -> bool:
    return api_version() >= "2026-10-21"


@cache
def allowed_params() -> frozenset[str]:
    """What params may hold (a refused sampling parameter is told apart before this)."""
    return known_params() | frozenset(SAMPLING_PARAMS)


# Keys a "simple" line may carry besides the params it may set directly.
SIMPLE_KEYS = frozenset({"custom_id", "prompt", "messages"})
NATIVE_KEYS = frozenset({"custom_id", "params"})
ROLES = frozenset({"user", "assistant"})


@dataclass(frozen=True, slots=True)
class Request:
    """One validated request, ready to send."""

    line: int
    custom_id: str  # as the user wrote it
    api_id: str  # as Batchline keeps it (equal unless the user's id is not valid at the API)
    wire: bytes  # {"custom_id": api_id, "params": {...}} as JSON (the chunk's tag goes after
    # api_id when the chunk is sent)
    params_key: str  # content address of the params (model included)
    model: str
    max_tokens: int
    prompt_chars: int

    @property
    def mapped(self) -> bool:
        return self.api_id != self.custom_id


class InvalidLine(Exception):
    """One line's reason for refusal (internal: becomes a LineError)."""


@dataclass(frozen=True)
class RowError(LineError):
    """A refused row of a table: shown as `row N` (the first row after the header is 1)."""

    def __str__(self) -> str:
        who = f" ({self.custom_id})" if self.custom_id else ""
        return f"row {self.line}{who}: {self.reason}"


@dataclass(frozen=True)
class RowSpec:
    """How the rows of a table job become requests: the prompt and system templates fill
    from the row's columns, and the id column (else the row number) is the custom_id. With
    no template, a row is a request itself (columns `prompt`, `messages`, `custom_id`...)."""

    template: Template | None = None
    system: Template | None = None
    id_column: str | None = None

    @classmethod
    def build(cls, template: str | None, system: str | None, id_column: str | None) -> RowSpec:
        """Check the job's row options; JobRefused names what is wrong."""
        if system is not None and template is None:
            raise JobRefused("system_template needs a template for the prompt")
        if id_column is not None and (not isinstance(id_column, str) or not id_column):
            raise JobRefused("id_column must be a non-empty string")
        return cls(
            template=Template.parse(template) if template is not None else None,
            system=Template.parse(system, "system template") if system is not None else None,
            id_column=id_column,
        )

    @property
    def shapes_rows(self) -> bool:
        """True when rows are not requests as they stand."""
        return self.template is not None or self.id_column is not None

    def custom_id(self, row: Mapping[str, Any], number: int) -> str | None:
        """The custom_id a row is sent under, or None when the row gives no usable one."""
        if self.id_column is not None:
            value = row.get(self.id_column)
            return None if value is None or value == "" else str(value)
        if self.template is not None:
            return str(number)
        value = row.get("custom_id")
        if value is None:
            return f"line-{number}"
        return value if isinstance(value, str) and value else None

    def request(self, row: Any, number: int) -> dict[str, Any]:
        """The request object (as a JSONL line would give it) for one row."""
        if not isinstance(row, dict):
            raise InvalidLine("a row must be a JSON object")
        if self.id_column is not None:
            if self.id_column not in row:
                raise InvalidLine(f"missing column {self.id_column!r} (the id column)")
            if self.custom_id(row, number) is None:
                raise InvalidLine(f"column {self.id_column!r} (the id column) is empty")
        if self.template is None:
            obj = {k: v for k, v in row.items() if k != self.id_column}
            if self.id_column is not None:
                obj["custom_id"] = self.custom_id(row, number)
            return obj
        try:
            obj = {"custom_id": self.custom_id(row, number), "prompt": self.template.render(row)}
            if self.system is not None:
                obj["system"] = self.system.render(row)
        except RowRefused as exc:
            raise InvalidLine(str(exc)) from None
        return obj


def api_custom_id(custom_id: str) -> str:
    """The id Batchline keeps the request under: the user's own when the API accepts it with
    a chunk tag after it (see chunking.TAG_BYTES), else a stable hash of it."""
    if len(custom_id) <= MAX_API_ID_CHARS and API_CUSTOM_ID.match(custom_id):
        return custom_id
    return MAPPED_PREFIX + hashlib.sha256(custom_id.encode()).hexdigest()[:40]


def check_defaults(defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate job defaults (model, max_tokens, system, other params); return a copy."""
    if defaults is None:
        return {}
    if not isinstance(defaults, Mapping):
        raise JobRefused("defaults must be a JSON object")
    unknown = sorted(set(defaults) - known_params() - {"messages"})
    if unknown:
        raise JobRefused(f"unknown field(s) in defaults: {', '.join(unknown)}")
    return dict(defaults)


def _text_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(b.get("text", "")) for b in content if isinstance(b, dict))
    return 0


def _check_messages(messages: Any) -> int:
    if type(messages) is list and len(messages) == 1:
        # The common shape, one user message of text: the same checks, fewer steps.
        m = messages[0]
        if type(m) is dict and m.get("role") == "user":
            content = m.get("content")
            if type(content) is str and content:
                return len(content)
    if not isinstance(messages, list):
        raise InvalidLine("messages must be a list")
    if not messages:
        raise InvalidLine("messages is empty")
    chars = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidLine(f"messages[{i}] must be an object")
        if m.get("role") not in ROLES:
            raise InvalidLine(f"messages[{i}].role must be 'user' or 'assistant'")
        content = m.get("content")
        if isinstance(content, str):
            if not content:
                raise InvalidLine(f"messages[{i}].content is empty")
        elif isinstance(content, list):
            if not content or not all(isinstance(b, dict) and "type" in b for b in content):
                raise InvalidLine(f"messages[{i}].content must be a non-empty list of blocks")
        else:
            raise InvalidLine(f"messages[{i}].content must be a string or a list of blocks")
        chars += _text_chars(content)
    if messages[0].get("role") != "user":
        raise InvalidLine("the first message must have role 'user'")
    return chars


def _check_params(params: dict[str, Any]) -> tuple[str, int, int]:
    if "stream" in params:
        if params["stream"]:
            raise InvalidLine("stream: true is not allowed in a batch")
        del params["stream"]
    sampling = [k for k in SAMPLING_PARAMS if k in params]
    if sampling and sampling_refused():
        raise InvalidLine(
            f"{', '.join(sampling)} not accepted under anthropic-version {api_version()}"
        )
    if not params.keys() <= allowed_params():
        unknown = sorted(params.keys() - allowed_params())
        raise InvalidLine(f"unknown field(s) in params: {', '.join(unknown)}")
    model = params.get("model")
    if model is None:
        raise InvalidLine("missing model (set it on the line or as a job default)")
    if not isinstance(model, str) or not model:
        raise InvalidLine("model must be a non-empty string")
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        raise InvalidLine("missing max_tokens (set it on the line or as a job default)")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidLine("max_tokens must be an integer of at least 1")
    if "messages" not in params:
        raise InvalidLine("missing messages (or prompt)")
    chars = _check_messages(params["messages"])
    system = params.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise InvalidLine("system must be a string or a list of blocks")
    chars += _text_chars(system)
    return model, max_tokens, chars


def build_params(obj: Any, defaults: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Split one input object into (custom_id or None, params merged with defaults)."""
    if not isinstance(obj, dict):
        raise InvalidLine("a line must be a JSON object")
    custom_id = obj.get("custom_id")
    if custom_id is not None and (not isinstance(custom_id, str) or not custom_id):
        raise InvalidLine("custom_id must be a non-empty string")
    if "params" in obj:
        if not obj.keys() <= NATIVE_KEYS:
            extra = sorted(obj.keys() - NATIVE_KEYS)
            raise InvalidLine(f"unknown field(s) beside params: {', '.join(extra)}")
        given = obj["params"]
        if not isinstance(given, dict):
            raise InvalidLine("params must be an object")
        # Copied only when something changes it (defaults merged in, or `stream` dropped):
        # the caller's objects are never modified.
        params = {**defaults, **given} if defaults or "stream" in given else given
    else:
        has_prompt, has_messages = "prompt" in obj, "messages" in obj
        if has_prompt == has_messages:
            raise InvalidLine("a line needs exactly one of params, prompt or messages")
        params = {**defaults}
        for key, value in obj.items():
            if key in ("custom_id", "prompt"):
                continue
            if key not in known_params() and key not in SAMPLING_PARAMS and key != "stream":
                raise InvalidLine(f"unknown field: {key}")
            params[key] = value
        if has_prompt:
            prompt = obj["prompt"]
            if not isinstance(prompt, str) or not prompt:
                raise InvalidLine("prompt must be a non-empty string")
            params["messages"] = [{"role": "user", "content": prompt}]
    return custom_id, params


def validate_one(obj: Any, line: int, defaults: Mapping[str, Any], max_bytes: int) -> Request:
    """Validate one parsed input object; raise InvalidLine with the reason."""
    custom_id, params = build_params(obj, defaults)
    model, max_tokens, chars = _check_params(params)
    if custom_id is None:
        custom_id = f"line-{line}"
    api_id = api_custom_id(custom_id)
    try:
        params_json = orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise InvalidLine(f"cannot be sent as JSON ({exc})") from None
    wire = b'{"custom_id":' + orjson.dumps(api_id) + b',"params":' + params_json + b"}"
    if len(wire) > max_bytes:
        raise InvalidLine(f"request is {len(wire)} bytes, over the limit of {max_bytes}")
    return Request(
        line=line,
        custom_id=custom_id,
        api_id=api_id,
        wire=wire,
        params_key=hashlib.sha256(params_json).hexdigest(),
        model=model,
        max_tokens=max_tokens,
        prompt_chars=chars,
    )


def parse_line(raw: bytes, line: int, defaults: Mapping[str, Any], max_bytes: int) -> Request:
    """Validate one JSONL line (bytes, without its newline)."""
    if len(raw) > max_bytes:
        raise InvalidLine(f"line is {len(raw)} bytes, over the limit of {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if "utf-8" in msg.lower() or "surrogates" in msg.lower():
            raise InvalidLine("not valid UTF-8") from None
        # orjson counts lines and columns within this one line: keep only the column.
        where = re.sub(r":? line \d+ column (\d+) \(char \d+\)", r" at column \1", msg)
        raise InvalidLine(f"not valid JSON ({where})") from None
    return validate_one(obj, line, defaults, max_bytes)


def custom_id_hint(raw: bytes | Any, rows: RowSpec | None = None, number: int = 0) -> str | None:
    """Best-effort custom_id of a refused line, for error messages."""
    if rows is not None and rows.id_column is not None:
        if isinstance(raw, (bytes, bytearray)):
            try:
                raw = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return None
        return rows.custom_id(raw, number) if isinstance(raw, dict) else None
    if rows is not None and rows.template is not None:
        return None  # the row number, shown already
    if isinstance(raw, dict):
        cid = raw.get("custom_id")
        return cid if isinstance(cid, str) else None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return custom_id_hint(obj) if isinstance(obj, dict) else None


def parse_row(raw: bytes) -> Any:
    """One JSONL line holding a row (a JSON object of column -> value)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "utf-8" in str(exc).lower() or "surrogates" in str(exc).lower():
            raise InvalidLine("not valid UTF-8") from None
        raise InvalidLine("not valid JSON") from None


def validate_stream(
    items: Iterable[tuple[int, bytes | Any]],
    defaults: Mapping[str, Any],
    max_bytes: int,
    rows: RowSpec | None = None,
) -> Iterator[Request | LineError]:
    """Validate (line number, raw line or parsed object) pairs in order. With `rows` (a
    table job) each item is a row, shaped into a request by the spec, and refused as a row."""
    error = LineError if rows is None else RowError
    unit = "line" if rows is None else "row"
    for line, item in items:
        if isinstance(item, Oversized):
            reason = f"{unit} is {item.size} bytes, over the limit of {max_bytes}"
            yield error(line=line, reason=reason)
            continue
        if isinstance(item, BadRow):
            yield error(line=line, reason=item.reason)
            continue
        try:
            if rows is not None and rows.shapes_rows:
                if isinstance(item, (bytes, bytearray, memoryview)):
                    if len(item) > max_bytes:
                        size = len(item)
                        raise InvalidLine(f"row is {size} bytes, over the limit of {max_bytes}")
                    item = parse_row(bytes(item))
                yield validate_one(rows.request(item, line), line, defaults, max_bytes)
            elif isinstance(item, (bytes, bytearray, memoryview)):
                yield parse_line(bytes(item), line, defaults, max_bytes)
            else:
                yield validate_one(item, line, defaults, max_bytes)
        except InvalidLine as exc:
            yield error(line=line, reason=str(exc), custom_id=custom_id_hint(item, rows, line))
