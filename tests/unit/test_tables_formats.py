"""Input formats, templates, row specs and results tables, without a broker."""

from __future__ import annotations

import builtins
import gzip
import io
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from batchline.client import derive_job_id
from batchline.errors import JobRefused, LineError
from batchline.formats import MissingExtra, detect_format, read_items, read_path, require
from batchline.outputs import output_format, write_table
from batchline.sources import BadRow
from batchline.store import JobOptions
from batchline.templates import RowRefused, Template
from batchline.validation import RowError, RowSpec, validate_stream

D = {"model": "claude-haiku-4-5", "max_tokens": 16}
LIMIT = 10_000


def items(data: bytes, fmt: str) -> list[tuple[int, Any]]:
    return list(read_items(io.BytesIO(data), fmt, LIMIT))


def test_the_format_comes_from_the_extension_through_a_compression_suffix() -> None:
    assert detect_format("a/b/docs.csv") == "csv"
    assert detect_format("docs.CSV.gz") == "csv"
    assert detect_format("docs.tsv.zst") == "tsv"
    assert detect_format("x.parquet") == "parquet"
    assert detect_format("x.jsonl.gz") == "jsonl"
    assert detect_format("requests.txt") == "jsonl"  # anything else: JSONL, as before
    assert detect_format("-") == "jsonl" and detect_format(None) == "jsonl"
    assert detect_format("docs.csv", "tsv") == "tsv"
    with pytest.raises(JobRefused, match="unknown format 'xlsx'"):
        detect_format("docs.xlsx", "xlsx")


def test_a_bom_and_crlf_are_accepted_in_jsonl_and_csv() -> None:
    jsonl = b'\xef\xbb\xbf{"a": 1}\r\n\r\n{"b": 2}\r\n'
    assert items(jsonl, "jsonl") == [(1, b'{"a": 1}'), (3, b'{"b": 2}')]
    table = b'\xef\xbb\xbfid,text\r\n1,hello\r\n\r\n2,"two\r\nlines, quoted"\r\n'
    assert items(table, "csv") == [
        (1, {"id": "1", "text": "hello"}),
        (2, {"id": "2", "text": "two\r\nlines, quoted"}),
    ]
    assert items(b"id\ttext\n1\ta, b\n", "tsv") == [(1, {"id": "1", "text": "a, b"})]


def test_gzip_and_zstd_are_known_by_their_content_whatever_the_name() -> None:
    data = b"id,text\n1,x\n2,y\n"
    want = [(1, {"id": "1", "text": "x"}), (2, {"id": "2", "text": "y"})]
    assert items(gzip.compress(data), "csv") == want
    assert items(zstandard.ZstdCompressor().compress(data), "csv") == want
    # Cut short: the job is refused, naming where the data stopped
    with pytest.raises(JobRefused, match=r"row 1: the gzip data cannot be read"):
        items(gzip.compress(data)[:12], "csv")


def test_bad_csv_rows_are_named_and_the_rest_still_read() -> None:
    data = b"id,text\n1,ok\n2\n3,caf\xe9\n4,fine,extra\n5,last\n"
    got = items(data, "csv")
    assert got[0] == (1, {"id": "1", "text": "ok"})
    assert got[1] == (2, BadRow("1 field(s) where the header has 2 (ending on line 3 of the file)"))
    assert got[2] == (3, BadRow("not valid UTF-8"))
    assert got[3][1] == BadRow("3 field(s) where the header has 2 (ending on line 5 of the file)")
    assert got[4] == (5, {"id": "5", "text": "last"})
    with pytest.raises(JobRefused, match="the header names column 'id' twice"):
        items(b"id,id\n1,2\n", "csv")
    assert items(b"", "csv") == []


def test_parquet_is_read_row_group_by_row_group_in_order(tmp_path: Path) -> None:
    rows = [{"n": i, "text": f"t{i}", "score": i / 2, "when": None} for i in range(25)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet", row_group_size=7)
    assert pq.ParquetFile(tmp_path / "x.parquet").num_row_groups == 4
    got = list(read_path(tmp_path / "x.parquet", "parquet", LIMIT))
    assert got == [(i + 1, r) for i, r in enumerate(rows)]
    # From a stream (standard input, an upload), through a temporary file
    stream = io.BytesIO((tmp_path / "x.parquet").read_bytes())
    assert list(read_items(stream, "parquet", LIMIT)) == got
    with pytest.raises(JobRefused, match="not a readable Parquet file"):
        items(b"id,text\n1,x\n", "parquet")


def test_a_missing_extra_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_pyarrow(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(__import__("sys").modules, "pyarrow.parquet")
    monkeypatch.delitem(__import__("sys").modules, "pyarrow")
    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(MissingExtra, match=r"pip install 'batchline\[parquet\]'"):
        require("pyarrow.parquet")


def test_templates_fill_from_columns_and_refuse_what_they_cannot_fill() -> None:
    t = Template.parse("Summarize {title!r}: {text} ({price:>6}) {{literal}}")
    assert t.columns == ("title", "text", "price")
    assert t.render({"title": "A", "text": "body", "price": 3}) == (
        "Summarize 'A': body (     3) {literal}"
    )
    with pytest.raises(RowRefused, match="missing column 'text'"):
        t.render({"title": "A", "price": 1})
    with pytest.raises(RowRefused, match="column 'price' is empty"):
        t.render({"title": "A", "text": "x", "price": None})
    with pytest.raises(RowRefused, match=r"column 'n': '3.5' cannot be formatted as \{n:.1f\}"):
        Template.parse("{n:.1f}").render({"n": "3.5"})
    # A field never reaches into Python objects: it is a column name, verbatim
    with pytest.raises(RowRefused, match=r"missing column 'text.__class__'"):
        Template.parse("{text.__class__}").render({"text": "x"})
    for bad, why in (
        ("Summarize: {", "is not valid"),
        ("Summarize: {}", "empty field"),
        ("no fields at all", "names no column"),
        ("{a:{b}}", "cannot hold another field"),
    ):
        with pytest.raises(JobRefused, match=why):
            Template.parse(bad)


def test_rows_become_requests_and_bad_rows_are_refused_as_rows() -> None:
    spec = RowSpec.build("Say {text}", "You are {persona}.", "id")
    stream = [
        (1, {"id": "a", "text": "hi", "persona": "kind"}),
        (2, {"id": "b", "text": "yo"}),
        (3, b'{"id": 7, "text": "json row", "persona": "terse"}'),
        (4, {"id": "", "text": "x", "persona": "y"}),
        (5, BadRow("1 field(s) where the header has 3")),
        (6, b"not json"),
    ]
    out = list(validate_stream(stream, D, LIMIT, spec))
    first = orjson.loads(out[0].wire)  # type: ignore[union-attr]
    assert first["custom_id"] == "a"
    assert first["params"]["messages"] == [{"role": "user", "content": "Say hi"}]
    assert first["params"]["system"] == "You are kind."
    assert out[2].custom_id == "7"  # type: ignore[union-attr]
    errors = [e for e in out if isinstance(e, LineError)]
    assert all(isinstance(e, RowError) for e in errors)
    assert [str(e) for e in errors] == [
        "row 2 (b): missing column 'persona' (named in the template)",
        "row 4: column 'id' (the id column) is empty",
        "row 5: 1 field(s) where the header has 3",
        "row 6: not valid JSON",
    ]
    # Without an id column the row number is the custom_id; without a template a row is
    # a request itself
    plain = RowSpec.build("Say {text}", None, None)
    assert plain.custom_id({"text": "x"}, 12) == "12"
    as_request = list(
        validate_stream([(1, {"prompt": "hi", "custom_id": "z"})], D, LIMIT, RowSpec())
    )
    assert orjson.loads(as_request[0].wire)["custom_id"] == "z"  # type: ignore[union-attr]
    with pytest.raises(JobRefused, match="system_template needs a template"):
        RowSpec.build(None, "sys {x}", None)


def test_the_derived_id_covers_the_table_options_and_keeps_every_earlier_id() -> None:
    sha = "ab" * 32
    base = derive_job_id(sha, {"defaults": D})
    # The id every earlier client derived for this submit (the table options left out)
    assert base == "job_" + __import__("hashlib").sha256(
        b"batchline-job-id/1\n" + sha.encode() + b"\n" + orjson.dumps(
            {"accept_invalid": False, "cache": False, "cache_scope": "global", "defaults": D,
             "hook_queue": None, "max_attempts": None, "max_cost_usd": None, "metadata": None,
             "on_complete": None, "on_result": None, "result_events": False,
             "webhook_url": None},
            option=orjson.OPT_SORT_KEYS,
        )
    ).hexdigest()[:32]  # fmt: skip
    for option, value in (
        ("format", "csv"),
        ("template", "Summarize: {text}"),
        ("system_template", "Be {tone}"),
        ("id_column", "id"),
    ):
        assert derive_job_id(sha, {"defaults": D, option: value}) != base, option
        assert derive_job_id(sha, {"defaults": D, option: None}) == base, option
    # The stored options round-trip, and a job stored before them keeps its fingerprint
    opts = JobOptions(defaults=D, format="csv", template="T {x}", id_column="id")
    assert JobOptions.from_json(opts.to_json()) == opts and opts.table
    assert b"template" not in JobOptions(defaults=D).canonical()
    assert not JobOptions(defaults=D, id_column="id").table


class FakeTable:
    columns = ["id", "n", "tags", "state", "cost_usd"]
    kinds = {"id": "str", "n": "int", "tags": "json", "state": "str", "cost_usd": "float"}
    rows = [
        {"id": "a", "n": 1, "tags": ["x", "y"], "state": "succeeded", "cost_usd": 0.5},
        {"id": "b, c", "n": None, "tags": None, "state": "failed", "cost_usd": None},
    ]

    def __iter__(self) -> Any:
        return iter(self.rows)


def test_tables_are_written_in_each_format_in_order(tmp_path: Path) -> None:
    assert output_format("x.CSV") == "csv" and output_format("x.parquet") == "parquet"
    assert output_format(None) == "jsonl" and output_format("x.out", "tsv") == "tsv"
    out = io.BytesIO()
    assert write_table(FakeTable(), out, "csv") == 2
    assert out.getvalue() == (
        b'id,n,tags,state,cost_usd\r\na,1,"[""x"",""y""]",succeeded,0.5\r\n"b, c",,,failed,\r\n'
    )
    out = io.BytesIO()
    write_table(FakeTable(), out, "jsonl")
    assert [orjson.loads(x) for x in out.getvalue().splitlines()] == FakeTable.rows
    with open(tmp_path / "t.parquet", "wb") as f:
        write_table(FakeTable(), f, "parquet")
    back = pq.read_table(tmp_path / "t.parquet")
    assert back.schema.field("n").type == pa.int64()
    assert back.to_pylist()[0] == {**FakeTable.rows[0], "tags": '["x","y"]'}
    assert back.to_pylist()[1]["id"] == "b, c"
