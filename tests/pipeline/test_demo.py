"""The demo's own code path (make demo), on a smaller slice of the bundled example."""

from __future__ import annotations

from pathlib import Path

import orjson

from batchline.cli.demo import EXAMPLE, print_summary, run_demo


def test_demo_runs_the_example_and_writes_every_result(tmp_path: Path) -> None:
    lines = EXAMPLE.read_bytes().splitlines()
    assert len(lines) >= 2000
    example = tmp_path / "example.jsonl"
    example.write_bytes(b"\n".join(lines[:400]) + b"\n")
    out = tmp_path / "results.jsonl"
    said: list[str] = []
    outcome = run_demo(
        example=example,
        output=out,
        processing_seconds=0.3,
        plain=True,
        workdir=tmp_path / "demo",
        echo=said.append,
    )
    records = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    ids = [orjson.loads(x)["custom_id"] for x in lines[:400]]
    assert [r["custom_id"] for r in records] == ids  # in input order, one each
    assert outcome.status["state"] == "completed"
    failed = {r["custom_id"] for r in records if r["state"] == "failed"}
    permanent = {orjson.loads(x)["custom_id"] for x in lines[:400] if b"[[emulate:errored:" in x}
    assert failed == permanent
    assert outcome.status["retried"] > 0
    print_summary(outcome, echo=said.append)
    assert any("cost at batch prices" in s for s in said)
