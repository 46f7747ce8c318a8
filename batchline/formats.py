"""Reading a job's input in the forms people have it: JSONL, CSV, TSV or Parquet, plain or
compressed with gzip or zstd, with or without a UTF-8 byte-order mark, always streaming.

JSONL lines come out as raw bytes (validated later, line by line); table rows come out as
dicts of column -> value, numbered from 1 for the first row after the header.
"""

from __future__ import annotations

import base64
import csv
import datetime
import decimal
import gzip
import importlib
import io
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePath
from types import ModuleType
from typing import Any, BinaryIO, cast

from batchline.errors import BatchlineError, JobRefused
from batchline.sources import BadRow, Item, iter_lines

FORMATS = ("jsonl", "csv", "tsv", "parquet")
TABLE_FORMATS = frozenset({"csv", "tsv", "parquet"})
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
COMPRESSION_SUFFIXES = frozenset({".gz", ".gzip", ".zst", ".zstd"})
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
MAGIC_BYTES = 4
# Rows handed on at a time from a Parquet row group (the row group is what is read).
PARQUET_BATCH_ROWS = 1024
# Optional dependencies, by module: the extra of batchline that installs each.
EXTRAS = {"pyarrow": "parquet", "zstandard": "zstd", "pandas": "pandas"}
WHAT_NEEDS = {"pyarrow": "Parquet", "zstandard": "zstd compression", "pandas": "a DataFrame"}
# Lone surrogates: what undecodable bytes become under errors="surrogateescape".
_UNDECODABLE = re.compile("[\udc80-\udcff]")


class MissingExtra(BatchlineError):
    """Raised when an optional dependency (Parquet, zstd, pandas) is not installed."""


def require(module: str) -> ModuleType:
    """Import an optional dependency, or raise MissingExtra naming the extra to install."""
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS[top]
        raise MissingExtra(
            f"{WHAT_NEEDS[top]} needs {top}, which is not installed: "
            f"pip install 'batchline[{extra}]'"
        ) from None


def detect_format(name: str | None, given: str | None = None) -> str:
    """The input's format: `given` when set, else from the file name's extension (a
    compression suffix is looked through: data.csv.gz is CSV), else JSONL."""
    if given is not None:
        if given not in FORMATS:
            raise JobRefused(f"unknown format {given!r}: choose from {', '.join(FORMATS)}")
        return given
    if not name or name == "-":
        return "jsonl"
    suffixes = [s.lower() for s in PurePath(name).suffixes]
    while suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes.pop()
    return EXTENSIONS.get(suffixes[-1], "jsonl") if suffixes else "jsonl"


class Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read (to look at them): those, then the rest."""

    def __init__(self, head: bytes, rest: BinaryIO):
        super().__init__()
        self.head = head
        self.rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.rest.read(len(b))
        b[: len(data)] = data
        return len(data)


def read_exactly(stream: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            break
        data += more
    return data


def decompressed(stream: BinaryIO) -> tuple[BinaryIO, str | None]:
    """The stream with gzip or zstd undone (known by their magic numbers, whatever the name
    says), and which compression it was."""
    head = read_exactly(stream, MAGIC_BYTES)
    raw = cast(BinaryIO, io.BufferedReader(Prefixed(head, stream)))
    if head.startswith(GZIP_MAGIC):
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb")), "gzip"
    if head.startswith(ZSTD_MAGIC):
        zstd = require("zstandard")
        reader = zstd.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return cast(BinaryIO, io.BufferedReader(reader)), "zstd"
    return raw, None


def compression_of(head: bytes) -> str | None:
    """gzip, zstd or None, from a stream's first bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    return "zstd" if head.startswith(ZSTD_MAGIC) else None


def read_items(stream: BinaryIO, fmt: str, max_bytes: int) -> Iterator[tuple[int, Item]]:
    """(line or row number, item) for the whole input; a stream that cannot be read past
    some point (a corrupt archive, a broken CSV) refuses the job, naming where."""
    plain, compression = decompressed(stream)
    if fmt == "jsonl":
        items = iter_lines(plain, max_bytes)
    elif fmt in ("csv", "tsv"):
        items = iter_csv(plain, "," if fmt == "csv" else "\t", max_bytes)
    elif fmt == "parquet":
        items = iter_parquet(plain)
    else:
        raise JobRefused(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    unreadable: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)
    if compression == "zstd":
        unreadable += (require("zstandard").ZstdError,)
    last = 0
    try:
        for number, item in items:
            last = number
            yield number, item
    except unreadable as exc:
        unit = "line" if fmt == "jsonl" else "row"
        what = f"the {compression} data" if compression else "the input"
        raise JobRefused(f"{unit} {last + 1}: {what} cannot be read ({exc})") from None


def read_path(path: Path, fmt: str, max_bytes: int) -> Iterator[tuple[int, Item]]:
    """read_items over a file (a plain Parquet file is read in place, by row group)."""
    with open(path, "rb") as f:
        if fmt == "parquet" and read_exactly(f, MAGIC_BYTES) == b"PAR1":
            yield from iter_parquet(path)
            return
        f.seek(0)
        yield from read_items(f, fmt, max_bytes)


def iter_csv(stream: BinaryIO, delimiter: str, max_bytes: int) -> Iterator[tuple[int, Item]]:
    """Rows of a CSV or TSV file with a header row (quoted commas and newlines inside fields
    are part of the field; blank lines are skipped and not counted)."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    csv.field_size_limit(max(max_bytes, 131072))
    reader = csv.reader(text, delimiter=delimiter)
    number = 0
    try:
        header = next(reader, None)
        if header is None:
            return
        if _UNDECODABLE.search("".join(header)):
            raise JobRefused("the header row is not valid UTF-8")
        seen: set[str] = set()
        for name in header:
            if name in seen:
                raise JobRefused(f"the header names column {name!r} twice")
            seen.add(name)
        for fields in reader:
            if not fields:
                continue
            number += 1
            if len(fields) != len(header):
                yield (
                    number,
                    BadRow(
                        f"{len(fields)} field(s) where the header has {len(header)} "
                        f"(ending on line {reader.line_num} of the file)"
                    ),
                )
            elif _UNDECODABLE.search("".join(fields)):
                yield number, BadRow("not valid UTF-8")
            else:
                yield number, dict(zip(header, fields, strict=True))
    except csv.Error as exc:
        raise JobRefused(f"row {number + 1}: not valid CSV ({exc})") from None


def iter_parquet(source: Path | BinaryIO) -> Iterator[tuple[int, Item]]:
    """Rows of a Parquet file, one row group in memory at a time. A stream that cannot be
    read in place (standard input, an upload, a compressed file) goes to a temporary file."""
    pq = require("pyarrow.parquet")
    if isinstance(source, Path):
        yield from _parquet_rows(pq, source)
        return
    with tempfile.TemporaryFile(prefix="batchline-") as spool:
        shutil.copyfileobj(source, spool, 1024 * 1024)
        spool.seek(0)
        yield from _parquet_rows(pq, spool)


def _parquet_rows(pq: ModuleType, source: Any) -> Iterator[tuple[int, Item]]:
    try:
        parquet = pq.ParquetFile(source)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid, OSError...
        raise JobRefused(f"not a readable Parquet file: {exc}") from None
    number = 0
    for group in range(parquet.num_row_groups):
        table = parquet.read_row_group(group)
        for batch in table.to_batches(max_chunksize=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                number += 1
                yield number, {k: plain_value(v) for k, v in row.items()}
        del table


def plain_value(value: Any) -> Any:
    """A Parquet value as JSON can hold it: dates and times in ISO 8601, decimals as text,
    bytes as text (base64 when not UTF-8), nested lists and maps kept."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, datetime.timedelta)):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    return str(value)
