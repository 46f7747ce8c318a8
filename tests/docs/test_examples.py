"""The runnable examples in docs/examples/ run as they are against a real stack."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_every_example_runs_against_a_stack(stack_factory: Any, tmp_path: Path) -> None:
    st = stack_factory()
    st.worker()
    env = {**os.environ, **st.env}  # BATCHLINE_REDIS_URL and the rest, as a deployment sets
    scripts = sorted(EXAMPLES.glob("*.py"))
    assert {p.name for p in scripts} == {"submit_requests.py", "csv_template.py", "send_task.py"}
    # Side by side: each waits mostly on its job, and one stack serves them all.
    procs = {
        p.name: subprocess.Popen(
            [sys.executable, str(p)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for p in scripts
    }
    deadline = time.monotonic() + 60
    out = {}
    for name, proc in procs.items():
        try:
            out[name] = proc.communicate(timeout=max(1, deadline - time.monotonic()))[0]
        except subprocess.TimeoutExpired:
            for other in procs.values():
                other.kill()
            raise
        assert proc.returncode == 0, (name, out[name])

    assert "state completed" in out["submit_requests.py"]
    assert "q2 -> echo: What is 17 times 3?" in out["submit_requests.py"]
    csv_out = out["csv_template.py"]
    assert "t-3 succeeded echo: Summarize this support ticket" in csv_out
    assert "wrote 3 rows" in csv_out
    assert "state completed" in out["send_task.py"]
    assert "'succeeded': 2" in out["send_task.py"]
