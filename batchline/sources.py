"""Where a job's input comes from: a file under the allowed directory, an upload, a list.

How the bytes are read (JSONL, CSV, TSV, Parquet, compressed or not) is batchline.formats.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import redis

from batchline.errors import JobRefused

try:  # ISA-L's inflate reads the same zlib streams, about 3 times faster
    from isal.isal_zlib import decompress
except ImportError:  # pragma: no cover - isal is a dependency; zlib does the same, slower
    from zlib import decompress

SEGMENT_BYTES = 4 * 1024 * 1024
READ_BYTES = 1024 * 1024
# A UTF-8 byte-order mark: Windows editors put one at the start of a file they save.
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Oversized:
    """A line longer than the per-request limit; only its size is kept."""

    size: int


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that cannot be read as one (a CSV row with the wrong number of fields, say)."""

    reason: str


# raw JSONL line, oversized or bad-row marker, or an already parsed object (a row, a request)
Item = bytes | Oversized | BadRow | Any


def resolve_source(path: str, source_dir: Path) -> Path:
    """The file a `source` names, refused when it lies outside the allowed directory."""
    root = source_dir.resolve()
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root / candidate
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        raise JobRefused(f"source {path!r} is outside the allowed directory {str(root)!r}")
    if not resolved.is_file():
        raise JobRefused(f"source {path!r} is not a readable file")
    return resolved


def iter_lines(stream: BinaryIO, max_bytes: int) -> Iterator[tuple[int, Item]]:
    """(line number, line) for every non-blank line; lines over max_bytes become Oversized.

    A byte-order mark before the first line is dropped; CRLF line ends are accepted."""
    number = 0
    while True:
        line = stream.readline(max_bytes + 2)
        if not line:
            return
        number += 1
        if number == 1 and line.startswith(BOM):
            line = line[len(BOM) :]
        if len(line) > max_bytes + 1 or (len(line) == max_bytes + 1 and not line.endswith(b"\n")):
            size = len(line)
            while not line.endswith(b"\n"):
                line = stream.readline(READ_BYTES)
                if not line:
                    break
                size += len(line)
            yield number, Oversized(size - (1 if line.endswith(b"\n") else 0))
            continue
        stripped = line.strip()
        if stripped:
            yield number, stripped


class UploadStream(io.RawIOBase):
    """Reads an upload (compressed segments in a Redis list) as one binary stream."""

    def __init__(self, r: redis.Redis, key: str):
        super().__init__()
        self.r = r
        self.key = key
        self.index = 0
        self.buffer = b""
        self.pos = 0

    def _fill(self) -> bool:
        segment = self.r.lindex(self.key, self.index)
        if segment is None:
            return False
        self.index += 1
        self.buffer = self.buffer[self.pos :] + decompress(segment)
        self.pos = 0
        return True

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.pos >= len(self.buffer) and not self._fill():
            return 0
        n = min(len(b), len(self.buffer) - self.pos)
        b[:n] = self.buffer[self.pos : self.pos + n]
        self.pos += n
        return n

    def readline(self, size: int | None = -1, /) -> bytes:
        limit = -1 if size is None else size
        while True:
            end = self.buffer.find(b"\n", self.pos)
            available = len(self.buffer) - self.pos
            if end >= 0 and (limit < 0 or end - self.pos + 1 <= limit):
                line = self.buffer[self.pos : end + 1]
                self.pos = end + 1
                return line
            if limit >= 0 and available >= limit:
                line = self.buffer[self.pos : self.pos + limit]
                self.pos += limit
                return line
            if not self._fill():
                line = self.buffer[self.pos :]
                self.pos = len(self.buffer)
                return line


def upload_segments(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Group JSONL lines into compressed segments of about SEGMENT_BYTES."""
    buf: list[bytes] = []
    size = 0
    for line in lines:
        if not line.endswith(b"\n"):
            line += b"\n"
        buf.append(line)
        size += len(line)
        if size >= SEGMENT_BYTES:
            yield zlib.compress(b"".join(buf), 1)
            buf, size = [], 0
    if buf:
        yield zlib.compress(b"".join(buf), 1)


def iter_blocks(stream: BinaryIO) -> Iterator[bytes]:
    """A file's bytes as they are (any format), in blocks of SEGMENT_BYTES (one upload
    segment each)."""
    while True:
        parts: list[bytes] = []
        size = 0
        while size < SEGMENT_BYTES:  # a pipe or a raw stream may read short
            more = stream.read(SEGMENT_BYTES - size)
            if not more:
                break
            parts.append(more)
            size += len(more)
        if not parts:
            return
        yield b"".join(parts)


def iter_objects(requests: list[Any]) -> Iterator[tuple[int, Item]]:
    """(line number, object) for a list of requests given inline."""
    if not isinstance(requests, list):
        raise JobRefused("requests must be a list")
    yield from enumerate(requests, start=1)


def fingerprint_objects(requests: list[Any]) -> str:
    sha = hashlib.sha256()
    for obj in requests:
        sha.update(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS))
        sha.update(b"\n")
    return sha.hexdigest()
