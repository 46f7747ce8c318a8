"""Tables in, the same tables with answers out: every input format end to end through real
redis-server, real celery workers and the emulator (the SDK over HTTP)."""

from __future__ import annotations

import csv
import gzip
import io
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from batchline.devstack import BIN
from batchline.errors import JobRefused
from tests.support.jobs import DEFAULTS

TEMPLATE = "Summarize: {text} (by {author})"
FAIL = "[[emulate:errored:invalid_request_error]]"


def rows(n: int, prefix: str = "doc") -> list[dict[str, str]]:
    """Rows with what spreadsheets hold: commas, quotes, newlines and accents inside fields."""
    out = []
    for i in range(n):
        text = f'line one of {prefix} {i}, with a comma and "quotes"'
        if i % 3 == 0:
            text += "\nand a second line, café"
        out.append({"id": f"{prefix}-{i}", "author": f"Ada, {i}", "text": text})
    return out


def write_csv(path: Path, table: list[dict[str, Any]], bom: bool = True) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(table[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(table)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode())
    return path


def answered(table: list[dict[str, Any]], template: str = TEMPLATE) -> list[dict[str, Any]]:
    """What each row should come back as: itself, then its state and answer."""
    out = []
    for row in table:
        prompt = template.format(**row)
        failed = FAIL in prompt
        out.append(
            {
                **row,
                "state": "failed" if failed else "succeeded",
                "answer": None if failed else "echo: " + prompt,
                "error_type": "invalid_request_error" if failed else None,
            }
        )
    return out


def check_table(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """The input rows in order, each with its answer, tokens and cost."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert {k: g[k] for k in w} == w
        if w["state"] == "succeeded":
            assert int(g["input_tokens"]) > 0 and int(g["output_tokens"]) > 0
            assert float(g["cost_usd"]) > 0 and not g["error_message"]
        else:
            assert g["error_message"] and g["answer"] in (None, "")


def read_csv(path: Path, delimiter: str = ",") -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        found = list(csv.DictReader(f, delimiter=delimiter))
    return [{k: (v if v != "" else None) for k, v in r.items()} for r in found]


def test_csv_with_template_comes_back_as_the_same_table_in_every_output_format(
    stack: Any, tmp_path: Path
) -> None:
    # Given a CSV saved by a Windows spreadsheet (BOM, CRLF), with quoted commas and
    # newlines inside fields, and one row the API refuses
    table = rows(30)
    table[7]["text"] += " " + FAIL
    table[11]["id"] = "doc 11 / é"  # an id the API would refuse: sent as a hash, shown as is
    src = write_csv(tmp_path / "docs.csv", table)
    # When it is submitted with a template, a system template and an id column
    sub = stack.client.submit(
        src,
        defaults=DEFAULTS,
        template=TEMPLATE,
        system_template="You summarize notes by {author}.",
        id_column="id",
        max_attempts=1,
    )
    final = stack.client.wait(sub["job_id"], timeout_s=60)
    # Then every row was sent once, under its id, with its own prompt and system
    assert sub["accepted"] == 30 and final["counts"]["succeeded"] == 29
    assert final["counts"]["failed"] == 1
    records = {r["custom_id"]: r for r in stack.client.results(sub["job_id"])}
    assert set(records) == {r["id"] for r in table}
    # And the results table is the input rows, in input order, with the answers beside them
    want = answered(table)
    got = list(stack.client.table(sub["job_id"]))
    check_table(got, want)
    assert list(got[0]) == [
        "id",
        "author",
        "text",
        "state",
        "answer",
        "error_type",
        "error_message",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    ]
    # in each output format, from the client and from the command line
    for name in ("out.csv", "out.parquet", "out.jsonl", "out.tsv"):
        assert stack.client.write_table(sub["job_id"], tmp_path / name) == 30
    cli = subprocess.run(
        [str(BIN / "batchline"), "results", sub["job_id"], "-o", str(tmp_path / "cli.csv")],
        env={"PATH": str(BIN), **stack.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "wrote 30 row(s)" in cli.stderr
    check_table(read_csv(tmp_path / "out.csv"), want)
    check_table(read_csv(tmp_path / "cli.csv"), want)
    check_table(read_csv(tmp_path / "out.tsv", "\t"), want)
    check_table(pq.read_table(tmp_path / "out.parquet").to_pylist(), want)
    jsonl = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert jsonl == got
    parquet = pq.read_table(tmp_path / "out.parquet")
    assert parquet.schema.field("input_tokens").type == pa.int64()
    assert parquet.schema.field("cost_usd").type == pa.float64()
    # And as a DataFrame
    frame = stack.client.dataframe(sub["job_id"])
    assert list(frame.columns) == list(got[0]) and len(frame) == 30
    assert frame["answer"].iloc[1] == want[1]["answer"]


def test_parquet_of_several_row_groups_gzip_zstd_and_a_source_handed_over_by_a_service(
    stack_factory: Any, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    st = stack_factory(source_dir=str(inputs))
    st.worker()
    # Given a Parquet file of four row groups, with an integer id column
    table = [{"n": i, "text": f"parquet row {i}", "author": "Bo"} for i in range(40)]
    pq.write_table(pa.Table.from_pylist(table), inputs / "docs.parquet", row_group_size=10)
    assert pq.ParquetFile(inputs / "docs.parquet").num_row_groups == 4
    # When it is uploaded by the client
    sub = st.client.submit(
        inputs / "docs.parquet", defaults=DEFAULTS, template=TEMPLATE, id_column="n"
    )
    st.client.wait(sub["job_id"], timeout_s=60)
    # Then every row came back in order, its integer id kept as an integer
    got = list(st.client.table(sub["job_id"]))
    check_table(got, answered(table))
    assert {r["custom_id"] for r in st.client.results(sub["job_id"])} == {str(i) for i in range(40)}

    # Given JSONL requests compressed with gzip, and a CSV compressed with zstd
    reqs = [{"custom_id": f"g{i}", "prompt": f"gzip {i}"} for i in range(12)]
    (tmp_path / "reqs.jsonl.gz").write_bytes(
        gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in reqs))
    )
    plain = write_csv(tmp_path / "plain.csv", rows(15, "zst"), bom=False)
    (tmp_path / "docs.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    # When both are submitted
    g = st.client.submit(tmp_path / "reqs.jsonl.gz", defaults=DEFAULTS)
    z = st.client.submit(tmp_path / "docs.csv.zst", defaults=DEFAULTS, template=TEMPLATE)
    st.client.wait(g["job_id"], timeout_s=60)
    st.client.wait(z["job_id"], timeout_s=60)
    # Then each was read through its compression
    gz = {r["custom_id"]: r for r in st.client.results(g["job_id"])}
    assert {k: v["message"]["content"][0]["text"] for k, v in gz.items()} == {
        r["custom_id"]: "echo: " + r["prompt"] for r in reqs
    }
    gz_table = list(st.client.table(g["job_id"]))  # JSONL requests: custom_ids in order
    assert [r["custom_id"] for r in gz_table] == [r["custom_id"] for r in reqs]
    assert [r["answer"] for r in gz_table] == ["echo: " + r["prompt"] for r in reqs]
    check_table(list(st.client.table(z["job_id"])), answered(rows(15, "zst")))

    # Given a CSV a service hands over by path, with the template in the message
    write_csv(inputs / "handed.csv", rows(9, "svc"))
    result = st.client.app.send_task(
        "batchline.submit_job",
        kwargs={
            "source": "handed.csv",
            "template": TEMPLATE,
            "id_column": "id",
            "defaults": DEFAULTS,
        },
    )
    answer = result.get(timeout=60)
    result.forget()
    st.client.wait(answer["job_id"], timeout_s=60)
    # Then the workers read it from the shared directory, as a CSV (from its extension)
    assert answer["accepted"] == 9
    check_table(list(st.client.table(answer["job_id"])), answered(rows(9, "svc")))
    assert st.emulator.stats()["requests_received"] == 40 + 12 + 15 + 9


def test_standard_input_and_a_jsonl_with_a_bom_and_crlf_through_the_command_line(
    stack: Any, tmp_path: Path
) -> None:
    env = {"PATH": str(BIN), **stack.env}

    def batchline(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(
            [str(BIN / "batchline"), *args],
            env=env,
            input=stdin,
            capture_output=True,
            timeout=90,
        )
        assert done.returncode == 0, done.stderr.decode()
        return done

    # Given a CSV on standard input
    table = rows(10, "pipe")
    csv_bytes = write_csv(tmp_path / "in.csv", table).read_bytes()
    # When it is piped into `batchline submit -` with a template
    done = batchline(
        "submit", "-", "--format", "csv", "--template", TEMPLATE, "--id-column", "id",
        "--model", DEFAULTS["model"], "--max-tokens", "64", "--wait",
        stdin=csv_bytes,
    )  # fmt: skip
    job_id = done.stdout.decode().strip().splitlines()[-1]
    # Then `batchline results` writes the table with its answers
    batchline("results", job_id, "-o", str(tmp_path / "out.csv"))
    check_table(read_csv(tmp_path / "out.csv"), answered(table))
    # And the same input again is the same job (the id derives from the bytes piped in)
    again = batchline(
        "submit", "-", "--format", "csv", "--template", TEMPLATE, "--id-column", "id",
        "--model", DEFAULTS["model"], "--max-tokens", "64",
        stdin=csv_bytes,
    )  # fmt: skip
    assert again.stdout.decode().strip().splitlines()[-1] == job_id
    assert "existing job" in again.stderr.decode()

    # Given JSONL saved by a Windows editor: a byte-order mark and CRLF line ends
    reqs = [{"custom_id": f"w{i}", "prompt": f"windows {i}"} for i in range(5)]
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(orjson.dumps(r) + b"\r\n" for r in reqs))
    # When it is submitted, from a template file too
    (tmp_path / "prompt.txt").write_text("Say: {prompt}\n")
    done = batchline(
        "submit", str(path), "--template-file", str(tmp_path / "prompt.txt"),
        "--id-column", "custom_id", "--model", DEFAULTS["model"], "--max-tokens", "64", "--wait",
    )  # fmt: skip
    job_id = done.stdout.decode().strip().splitlines()[-1]
    # Then every line was read, the first one too, and answered through the template
    got = list(stack.client.table(job_id))
    assert [r["custom_id"] for r in got] == [r["custom_id"] for r in reqs]
    assert [r["answer"] for r in got] == [f"echo: Say: {r['prompt']}" for r in reqs]
    plain = stack.client.submit(path, defaults=DEFAULTS)
    assert plain["accepted"] == 5 and plain["rejected"] == []


def test_a_template_over_rows_missing_a_column_is_refused_naming_each_row_and_column(
    stack: Any, tmp_path: Path
) -> None:
    # Given rows of which some lack a column the template names, or have too few fields
    table: list[dict[str, Any]] = [
        {"id": f"r{i}", "author": "Cy", "text": f"text {i}"} for i in range(6)
    ]
    del table[2]["author"]
    table[4]["text"] = None
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in table))
    short = tmp_path / "short.csv"
    short.write_bytes(b"id,author,text\nr0,Cy,hello\nr1,Cy\nr2,Cy,hi\n")
    # When they are submitted with the template
    with pytest.raises(JobRefused) as err:
        stack.client.submit(path, defaults=DEFAULTS, template=TEMPLATE, id_column="id")
    with pytest.raises(JobRefused) as err_csv:
        stack.client.submit(short, defaults=DEFAULTS, template=TEMPLATE)
    # Then each bad row is named with its column, and nothing was sent or kept
    msg = str(err.value)
    assert "2 invalid row(s), nothing was sent" in msg
    assert "row 3 (r2): missing column 'author' (named in the template)" in msg
    assert "row 5 (r4): column 'text' is empty (null)" in msg
    assert "row 1" not in msg and "row 6" not in msg
    assert "row 2: 2 field(s) where the header has 3 (ending on line 3 of the file)" in str(
        err_csv.value
    )
    assert stack.emulator.stats()["calls"]["create"] == 0
    assert list(stack.redis.client().scan_iter("bl:job:*")) == []
    # And with --accept-invalid the good rows go, the bad ones come back as rejected rows
    sub = stack.client.submit(
        path, defaults=DEFAULTS, template=TEMPLATE, id_column="id", accept_invalid=True
    )
    stack.client.wait(sub["job_id"], timeout_s=60)
    got = list(stack.client.table(sub["job_id"]))
    assert [r["id"] for r in got] == [f"r{i}" for i in range(6)]
    assert [r["state"] for r in got] == ["succeeded"] * 2 + ["rejected"] + ["succeeded"] + [
        "rejected"
    ] + ["succeeded"]
    assert got[2]["error_message"] == "missing column 'author' (named in the template)"
