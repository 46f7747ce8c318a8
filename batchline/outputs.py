"""Writing a results table (batchline.tables.ResultTable) as CSV, TSV, Parquet or JSONL, or
handing it over as a pandas DataFrame; every writer streams, a slice of rows at a time."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from itertools import islice
from pathlib import Path, PurePath
from typing import Any, BinaryIO, Protocol

import orjson

from batchline.errors import BatchlineError
from batchline.formats import require

OUTPUT_FORMATS = ("csv", "tsv", "parquet", "jsonl")
OUTPUT_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
PARQUET_ROWS_PER_GROUP = 10_000


class TableLike(Protocol):
    """What the writers need: rows, their column names, and each column's kind."""

    columns: list[str]
    kinds: dict[str, str]

    def __iter__(self) -> Iterator[dict[str, Any]]: ...


def output_format(path: str | None, given: str | None = None) -> str:
    """The format to write: `given`, else from the path's extension, else JSONL."""
    if given is not None:
        if given not in OUTPUT_FORMATS:
            raise BatchlineError(
                f"unknown output format {given!r}: choose from {', '.join(OUTPUT_FORMATS)}"
            )
        return given
    if not path or path == "-":
        return "jsonl"
    suffix = PurePath(path).suffix.lower()
    return OUTPUT_EXTENSIONS.get(suffix, "jsonl")


def _cell(value: Any) -> Any:
    """A value as a CSV cell: lists and objects as JSON, null as empty."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def write_table(table: TableLike, out: BinaryIO, fmt: str) -> int:
    """Write every row of the table to `out` in `fmt`; returns the number of rows."""
    if fmt == "jsonl":
        count = 0
        for row in table:
            out.write(orjson.dumps(row) + b"\n")
            count += 1
        return count
    if fmt in ("csv", "tsv"):
        text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        try:
            writer = csv.writer(text, delimiter="," if fmt == "csv" else "\t")
            writer.writerow(table.columns)
            count = 0
            for row in table:
                writer.writerow([_cell(row.get(c)) for c in table.columns])
                count += 1
            text.flush()
            return count
        finally:
            text.detach()  # leave `out` open for its owner
    if fmt == "parquet":
        return _write_parquet(table, out)
    raise BatchlineError(f"unknown output format {fmt!r}: choose from {', '.join(OUTPUT_FORMATS)}")


def write_table_file(table: TableLike, path: str | Path, fmt: str | None = None) -> int:
    """Write the table to a file (its format from `fmt` or the extension)."""
    chosen = output_format(str(path), fmt)
    if chosen == "parquet":
        require("pyarrow")  # before the file is made
    with open(path, "wb") as f:
        return write_table(table, f, chosen)


def _arrow_type(pa: Any, kind: str) -> Any:
    return {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}.get(kind, pa.string())


def _arrow_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "json" or (kind == "str" and not isinstance(value, str)):
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    if kind == "float":
        return float(value)
    return value


def _write_parquet(table: TableLike, out: BinaryIO) -> int:
    pa = require("pyarrow")
    pq = require("pyarrow.parquet")
    columns = table.columns
    kinds = [table.kinds.get(c, "str") for c in columns]
    schema = pa.schema([(c, _arrow_type(pa, k)) for c, k in zip(columns, kinds, strict=True)])
    count = 0
    with pq.ParquetWriter(out, schema) as writer:
        rows: Iterator[dict[str, Any]] = iter(table)
        while batch := list(islice(rows, PARQUET_ROWS_PER_GROUP)):
            arrays = [
                pa.array([_arrow_value(r.get(c), k) for r in batch], type=schema.field(c).type)
                for c, k in zip(columns, kinds, strict=True)
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            count += len(batch)
    return count


def dataframe(table: TableLike) -> Any:
    """The whole table as a pandas DataFrame (the `pandas` extra)."""
    pd = require("pandas")
    return pd.DataFrame.from_records(list(table), columns=table.columns)
