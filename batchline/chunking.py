"""Cutting a stream of requests into batches by request count and body size, and the tag
that marks a chunk's requests at the API as Batchline's own."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

import orjson

# The create body is {"requests":[r1,r2,...]}: this much besides the requests and commas.
ENVELOPE_BYTES = len(b'{"requests":[]}')

# Every custom_id a chunk sends ends in the chunk's tag: "_" and seven random letters or
# digits, drawn when the chunk is made. The API keeps no other mark of who made a batch
# (no metadata, no idempotency key), so the tag is the proof that a batch found in `list`
# is this chunk's: its results carry the tag, another client's cannot.
TAG_SEPARATOR = "_"
TAG_CHARS = 7
TAG_BYTES = len(TAG_SEPARATOR) + TAG_CHARS
_ALPHABET = string.ascii_letters + string.digits
_ID_START = len(b'{"custom_id":"')


def new_tag() -> str:
    """A fresh chunk tag (about 41 bits of randomness)."""
    return TAG_SEPARATOR + "".join(secrets.choice(_ALPHABET) for _ in range(TAG_CHARS))


def tag_wire(wire: bytes, api_id: str, tag: str) -> bytes:
    """The stored request (`{"custom_id":"<api_id>",...`) with the tag after its custom_id."""
    end = _ID_START + len(api_id)
    return wire[:end] + tag.encode() + wire[end:]


def line_custom_id(line: bytes) -> str:
    """The custom_id of one results line ("" when it has none)."""
    try:
        cid = orjson.loads(line).get("custom_id")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return cid if isinstance(cid, str) else ""


def untag(custom_id: str, tag: str) -> str | None:
    """The api custom_id behind a result line's custom_id; None when it lacks the tag (a line
    of another client's batch). An untagged chunk (tag "") takes ids as they are."""
    if not tag:
        return custom_id
    if len(custom_id) > len(tag) and custom_id.endswith(tag):
        return custom_id[: -len(tag)]
    return None


@dataclass
class Chunker:
    """Tracks the open chunk and says when the next request must start a new one."""

    max_requests: int
    max_bytes: int
    number: int = 0
    count: int = 0
    body_bytes: int = ENVELOPE_BYTES

    def would_overflow(self, size: int) -> bool:
        """True when a request of `size` bytes does not fit in the open chunk."""
        if self.count == 0:
            return False
        extra = size + 1  # the comma before it
        return self.count >= self.max_requests or self.body_bytes + extra > self.max_bytes

    def add(self, size: int) -> bool:
        """Place a request; True when it opened a new chunk (the previous one is complete)."""
        opened = self.would_overflow(size)
        if opened:
            self.number += 1
            self.count = 0
            self.body_bytes = ENVELOPE_BYTES
        self.body_bytes += size + (1 if self.count else 0)
        self.count += 1
        return opened


def body_size(sizes: list[int]) -> int:
    """Exact size of a create body holding requests of these sizes."""
    return ENVELOPE_BYTES + sum(sizes) + max(len(sizes) - 1, 0)
