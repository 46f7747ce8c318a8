"""Wire formats: the result record, the job summary, and the JSON and compression codecs."""

from __future__ import annotations

import zlib
from typing import Any, Literal, NotRequired, TypedDict

import orjson

TerminalState = Literal["succeeded", "failed", "canceled", "rejected"]
TERMINAL_STATES: tuple[TerminalState, ...] = ("succeeded", "failed", "canceled", "rejected")

# Level 1 keeps compression off the hot path; request bodies still shrink about 2x.
COMPRESS_LEVEL = 1


class ErrorInfo(TypedDict):
    type: str
    message: str


class ResultRecord(TypedDict):
    """One request's terminal state: exactly one per custom_id per job."""

    custom_id: str
    state: TerminalState
    attempts: int
    message: NotRequired[dict[str, Any]]
    error: NotRequired[ErrorInfo]
    line: NotRequired[int]
    cached: NotRequired[bool]


class SubmitResult(TypedDict):
    """What `batchline.submit_job` returns."""

    job_id: str
    accepted: int
    rejected: list[dict[str, Any]]
    existing: bool


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def pack(data: bytes) -> bytes:
    """Compress bytes for storage in Redis."""
    return zlib.compress(data, COMPRESS_LEVEL)


def unpack(data: bytes) -> bytes:
    return zlib.decompress(data)


def pack_obj(obj: Any) -> bytes:
    return pack(orjson.dumps(obj))


def unpack_obj(data: bytes) -> Any:
    return orjson.loads(zlib.decompress(data))
