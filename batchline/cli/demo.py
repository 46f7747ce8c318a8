"""`batchline demo`: the main job end to end on one machine, starting and stopping what it needs."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import orjson

from batchline.client import Client
from batchline.devstack import Beat, Emulator, RedisServer, Worker, stack_env
from batchline.settings import Settings

EXAMPLE = Path(__file__).parents[1] / "examples" / "demo.jsonl"
DEFAULTS = {"model": "claude-haiku-4-5", "max_tokens": 200}

# Timings for a local run: the emulator answers in seconds, so poll every fraction of one.
EMULATED = {
    "poll_interval_s": 0.5,
    "poll_max_interval_s": 2,
    "api_retry_base_s": 0.5,
    "api_retry_max_s": 5,
    "api_rpm": 6000,
    "sweep_interval_s": 5,
    "max_batch_requests": 500,
    "visibility_timeout_s": 60,
}


@dataclass
class DemoOutcome:
    job_id: str
    status: dict[str, Any]
    states: Counter[str]
    output: Path
    seconds: float


def run_demo(
    *,
    example: Path = EXAMPLE,
    output: Path = Path("demo-results.jsonl"),
    emulate: bool = True,
    api_key: str | None = None,
    workers: int = 1,
    concurrency: int = 3,
    processing_seconds: float = 1.5,
    plain: bool | None = None,
    workdir: Path | None = None,
    echo: Any = None,
) -> DemoOutcome:
    """Start Redis (and the emulator), workers and beat; run the example; stop them all."""
    from batchline.cli.main import follow

    say = echo or (lambda msg: click.echo(msg, err=True))
    tmp = tempfile.TemporaryDirectory(prefix="batchline-demo-") if workdir is None else None
    root = workdir or Path(tmp.name)  # type: ignore[union-attr]
    procs: list[Any] = []
    try:
        redis_server = RedisServer(root / "redis", appendonly=True).start()
        procs.append(redis_server)
        say(f"redis-server on port {redis_server.port}")
        settings: dict[str, Any] = dict(EMULATED) if emulate else {"max_batch_requests": 500}
        emu_url = None
        if emulate:
            emu = Emulator(root, "--processing-seconds", str(processing_seconds)).start()
            procs.append(emu)
            emu_url = emu.base_url
            say(f"emulator on {emu_url}")
        env = stack_env(redis_server.url, emu_url, api_key=api_key, **settings)
        for i in range(workers):
            procs.append(Worker(root, env, name=f"demo{i + 1}", concurrency=concurrency).start())
        procs.append(Beat(root, env).start())
        say(f"{workers} worker(s) and beat started; submitting {example.name}")
        client = Client(Settings(redis_url=redis_server.url))
        started = time.monotonic()
        submitted = client.submit(example, defaults=DEFAULTS, job_id=f"demo-{int(time.time())}")
        say(f"job {submitted['job_id']}: {submitted['accepted']} requests accepted")
        final = follow(client, submitted["job_id"], plain=plain)
        states: Counter[str] = Counter()
        with open(output, "wb") as f:
            for rec in client.results(submitted["job_id"], ordered=True):
                states[rec["state"]] += 1
                f.write(orjson.dumps(rec) + b"\n")
        return DemoOutcome(submitted["job_id"], final, states, output, time.monotonic() - started)
    finally:
        for p in reversed(procs):
            p.stop()
        if tmp is not None:
            tmp.cleanup()


def print_summary(outcome: DemoOutcome, echo: Any = click.echo) -> None:
    st = outcome.status
    c = st["counts"]
    echo(f"job {outcome.job_id} {st['state']} in {outcome.seconds:.1f}s")
    echo(
        f"  requests: {c['total']} total, {c['succeeded']} succeeded, {c['failed']} failed, "
        f"{c['canceled']} canceled, {c['rejected']} rejected"
    )
    echo(
        f"  retries:  {st.get('retried_requests', st['retried'])} request(s) sent again in "
        f"{sum(1 for b in st['batches'] if b['attempt'] > 1)} retry batch(es); "
        f"{len(st['batches'])} batches in all"
    )
    failed_types = Counter(b.get("error") for b in st["batches"] if b.get("error"))
    if failed_types:
        echo(f"  batch errors: {dict(failed_types)}")
    u = st["usage"]
    echo(
        f"  tokens:   {u['input_tokens']} in, {u['output_tokens']} out; "
        f"cost at batch prices ${st['cost_usd']:.4f}"
    )
    echo(f"  results:  {outcome.output} ({sum(outcome.states.values())} records)")
