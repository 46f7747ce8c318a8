"""A table job's rows in Redis, and its results as that table: each input row, in input order,
with the answer's columns added.

Rows are kept by the ingest in the job's `rows` list: segments of about ROW_SEGMENT_BYTES of
`<row number> <row as JSON>` lines, compressed together (rows of one table share most of their
words, so a segment compresses far better than each row alone). Reading them back is a
stream: a segment at a time, its records fetched with one HMGET, so writing a results table
holds one segment in memory whatever the job's size, and needs no sorting (the segments are
in input order already). A job of JSONL requests keeps no rows: its table is the custom_ids,
in input order, with the same columns added.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from batchline.errors import JobNotFound, JobRefused
from batchline.pricing import NANO, cost_nusd
from batchline.sources import Item
from batchline.store import JobOptions, Store
from batchline.validation import RowSpec, api_custom_id
from batchline.wire import unpack_obj

ROW_SEGMENT_BYTES = 256 * 1024
# Rows stay until the job expires (the requests go as they finish), so they are worth a
# stronger level than the requests' 1; measured by `make bench` (table_ingest).
ROW_COMPRESS_LEVEL = 6
MAX_COLUMNS = 10_000
READ_SEGMENTS = 8
# The columns added to each row, in order (renamed `batchline_<name>` where the input
# already has a column of that name).
ANSWER_COLUMNS = (
    "state",
    "answer",
    "error_type",
    "error_message",
    "input_tokens",
    "output_tokens",
    "cost_usd",
)
ANSWER_KINDS = {
    "state": "str",
    "answer": "str",
    "error_type": "str",
    "error_message": "str",
    "input_tokens": "int",
    "output_tokens": "int",
    "cost_usd": "float",
}


def kind(value: Any) -> str:
    """The JSON kind of a value: null, bool, int, float, str or json (lists and objects)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return "json"


class RowWriter:
    """Keeps every input row of a table job (valid or not) in the job's `rows` list."""

    def __init__(self, store: Store, job_id: str):
        self.r = store.r
        self.key = store.keys(job_id).rows
        self.buffer: list[bytes] = []
        self.size = 0
        self.rows = 0
        self.columns: dict[str, set[str]] = {}  # column -> kinds of its values, first seen first

    def tee(self, items: Iterable[tuple[int, Item]]) -> Iterator[tuple[int, Item]]:
        """Pass the items on, keeping each row on the way."""
        for number, item in items:
            self.add(number, item)
            yield number, item

    def add(self, number: int, item: Item) -> None:
        row: Any = None
        data = b"null"
        if isinstance(item, dict):
            row = item
            try:
                data = orjson.dumps(item)
            except orjson.JSONEncodeError:
                row = None
        elif isinstance(item, (bytes, bytearray)):
            data = bytes(item)
            try:
                row = orjson.loads(data)
            except orjson.JSONDecodeError:
                data = b"null"
        if isinstance(row, dict):
            self._note(row)
        else:
            data = b"null"
        line = b"%d %s\n" % (number, data)
        self.buffer.append(line)
        self.size += len(line)
        self.rows += 1
        if self.size >= ROW_SEGMENT_BYTES:
            self.flush()

    def _note(self, row: dict[str, Any]) -> None:
        columns = self.columns
        for name, value in row.items():
            kinds = columns.get(name)
            if kinds is None:
                if len(columns) >= MAX_COLUMNS:
                    raise JobRefused(f"the rows have more than {MAX_COLUMNS:,} distinct columns")
                kinds = columns[name] = set()
            kinds.add(kind(value))

    def flush(self) -> None:
        if self.buffer:
            self.r.rpush(self.key, zlib.compress(b"".join(self.buffer), ROW_COMPRESS_LEVEL))
            self.buffer, self.size = [], 0

    def close(self) -> dict[str, Any]:
        """Write what is left; the table's shape (columns, kinds of values, rows)."""
        self.flush()
        return {
            "columns": list(self.columns),
            "kinds": {name: sorted(kinds) for name, kinds in self.columns.items()},
            "rows": self.rows,
        }


def answer_text(message: dict[str, Any] | None) -> str | None:
    """The text blocks of a message, joined."""
    if not message:
        return None
    blocks = message.get("content") or []
    return "".join(
        b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"
    )


class ResultTable:
    """A job's results as rows (dicts) in input order: the input's columns, then
    ANSWER_COLUMNS. Iterable more than once; `columns` and `kinds` describe it."""

    def __init__(self, store: Store, job_id: str):
        fields = store.job_fields(job_id)
        if "options" not in fields:
            raise JobNotFound(f"job {job_id!r} is still being submitted; try again shortly")
        self.store = store
        self.job_id = job_id
        self.options = JobOptions.from_json(fields["options"])
        shape = orjson.loads(fields["table"]) if fields.get("table") else None
        self.kept = shape is not None
        if shape is None:
            self.input_columns = ["custom_id"]
            input_kinds = {"custom_id": "str"}
        else:
            self.input_columns = list(shape["columns"])
            input_kinds = {c: _column_kind(k) for c, k in shape["kinds"].items()}
        self.names = {}
        for name in ANSWER_COLUMNS:
            shown = name
            while shown in self.input_columns:
                shown = f"batchline_{shown}"
            self.names[name] = shown
        self.columns = self.input_columns + list(self.names.values())
        self.kinds = {
            **input_kinds,
            **{self.names[n]: ANSWER_KINDS[n] for n in ANSWER_COLUMNS},
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.kept:
            yield from self._kept_rows()
            return
        for rec in self.store.iter_records(self.job_id, ordered=True):
            yield {"custom_id": rec.get("custom_id"), **self._answer(rec)}

    def _answer(self, rec: dict[str, Any] | None) -> dict[str, Any]:
        n = self.names
        if rec is None:
            return {n["state"]: "pending", **{n[c]: None for c in ANSWER_COLUMNS[1:]}}
        message = rec.get("message")
        error = rec.get("error") or {}
        usage = (message or {}).get("usage") or {}
        cost: float | None = None
        if message is not None:
            nusd = (
                0
                if rec.get("cached")
                else cost_nusd(self.store.settings, str(message.get("model") or ""), usage)
            )
            cost = round(nusd / NANO, 9)
        return {
            n["state"]: rec.get("state"),
            n["answer"]: answer_text(message),
            n["error_type"]: error.get("type"),
            n["error_message"]: error.get("message"),
            n["input_tokens"]: usage.get("input_tokens"),
            n["output_tokens"]: usage.get("output_tokens"),
            n["cost_usd"]: cost,
        }

    def _kept_rows(self) -> Iterator[dict[str, Any]]:
        r = self.store.r
        keys = self.store.keys(self.job_id)
        o = self.options
        spec = RowSpec.build(o.template, o.system_template, o.id_column)
        total = r.llen(keys.rows)
        for start in range(0, total, READ_SEGMENTS):
            for segment in r.lrange(keys.rows, start, start + READ_SEGMENTS - 1):
                entries = []
                for line in zlib.decompress(segment).splitlines():
                    number, data = line.split(b" ", 1)
                    entries.append((int(number), orjson.loads(data)))
                yield from self._join(spec, entries, keys.records)

    def _join(
        self, spec: RowSpec, entries: list[tuple[int, Any]], records_key: str
    ) -> Iterator[dict[str, Any]]:
        names: list[str] = []
        for number, row in entries:
            cid = spec.custom_id(row, number) if isinstance(row, dict) else None
            names += [f"!{number}", api_custom_id(cid) if cid else f"!{number}"]
        values = self.store.r.hmget(records_key, names)
        for i, (number, row) in enumerate(entries):
            rejected, raw = values[2 * i], values[2 * i + 1]
            rec = unpack_obj(rejected) if rejected is not None else None
            if rec is None and raw is not None:
                rec = unpack_obj(raw)
                if rec.get("line") not in (None, number):
                    rec = None  # another row's (a repeated custom_id refused on this row)
            cells = row if isinstance(row, dict) else {}
            yield {**{c: cells.get(c) for c in self.input_columns}, **self._answer(rec)}


def _column_kind(kinds: list[str]) -> str:
    """One kind for a column from the kinds of its values (null fits any)."""
    seen = set(kinds) - {"null"}
    if not seen:
        return "str"
    if len(seen) == 1:
        return seen.pop()
    if seen <= {"int", "float"}:
        return "float"
    return "json"
