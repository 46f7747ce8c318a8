"""What durable writes cost a create: the pipeline's own create path for a chunk
(batchline.pipeline.create.create_batch: admission, rate-limit token, intent, the API call,
the batch's claim) run in this process against a private primary Redis (append-only file on)
with one replica, and the emulator, once per BATCHLINE_DURABLE_WRITES mode: `off`, `replica`
(WAIT for the replica's acknowledgement) and `fsync` (WAITAOF) where the server has it.

Each mode submits its own job of small chunks, makes a few creates to warm up, then the
modes take turns in rounds, so that a change in the machine's load falls on all of them
alike. Reported per mode: creates per second, milliseconds per create, and the time of the
two writes that wait (the intent and the claim); per durable mode, the milliseconds it adds
to a create over `off`.

    .venv/bin/python -m bench.durable_writes [--creates 200]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import redis

from batchline.devstack import EMULATOR_KEY, Emulator, RedisServer, wait_for
from batchline.durability import Durability
from batchline.pipeline import create, submit
from batchline.pipeline.context import Context, Defer
from batchline.settings import Settings
from batchline.store import JobOptions, Store

DEFAULT_CREATES = 200
QUICK_CREATES = 30
WARMUP_CREATES = 5
ROUNDS = 4
# Small chunks: the cost measured is per create, whatever its size.
REQUESTS_PER_CHUNK = 2
DEFAULTS = {"model": "claude-haiku-4-5", "max_tokens": 16}
# Batches that never end while the creates are measured: nothing but creates reaches the API.
PROCESSING_S = 3600
WAITAOF_SINCE = (7, 2)
MODES = ("off", "replica", "fsync")


class ReplicaServer(RedisServer):
    """A private redis-server replicating `primary`, with its own append-only file."""

    def __init__(self, workdir: Path, primary: RedisServer):
        replica_args = ["--replicaof", "127.0.0.1", str(primary.port)]
        super().__init__(workdir, appendonly=True, extra_args=replica_args)
        self.primary = primary


class QuietDispatcher:
    """Sends nothing: the creates run here, and the tasks they would schedule (each create's
    first poll, event wake-ups) are only counted."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()

    def send(self, name: str, args: tuple[Any, ...], countdown: float | None = None) -> None:
        self.sent[name] += 1

    def send_many(self, name: str, args: Iterable[tuple[Any, ...]]) -> int:
        n = sum(1 for _ in args)
        self.sent[name] += n
        return n

    def send_hooks(
        self,
        hooks: Sequence[tuple[str, tuple[Any, ...], str, str | None]],
        then: Callable[[Any], None],
    ) -> None:
        self.sent["hooks"] += len(hooks)


class TimedStore(Store):
    """The Store, timing the two writes that durable_writes makes wait: a create's intent and
    its batch's claim."""

    def __init__(self, r: redis.Redis, settings: Settings):
        super().__init__(r, settings)
        self.intent_s: list[float] = []
        self.claim_s: list[float] = []

    def begin_create(self, job_id: str, number: int) -> tuple[float | None, bool]:
        started = time.perf_counter()
        try:
            return super().begin_create(job_id, number)
        finally:
            self.intent_s.append(time.perf_counter() - started)

    def adopt(self, job_id: str, number: int, batch_id: str, **fields: Any) -> str:
        started = time.perf_counter()
        try:
            return super().adopt(job_id, number, batch_id, **fields)
        finally:
            self.claim_s.append(time.perf_counter() - started)


@dataclass
class ModeRun:
    """One mode's context, its job's chunks still to create, and what its creates took."""

    mode: str
    ctx: Context
    store: TimedStore
    dispatch: QuietDispatcher
    job_id: str
    todo: list[int]
    create_s: list[float] = field(default_factory=list)
    not_created: int = 0

    def create(self, count: int) -> list[float]:
        """Make the next `count` creates; the seconds each took."""
        took = []
        for number in self.todo[:count]:
            started = time.perf_counter()
            # A Defer (an intent not durable in time, say) would be retried by the pipeline;
            # here the chunk is counted as not created.
            with contextlib.suppress(Defer):
                create.create_batch(self.ctx, self.job_id, number)
            took.append(time.perf_counter() - started)
            chunk = self.store.chunk(self.job_id, number)
            if chunk is None or chunk.state != "in_progress":
                self.not_created += 1
        del self.todo[:count]
        return took


def server_version(r: redis.Redis) -> tuple[str, tuple[int, int]]:
    text = str(r.info("server")["redis_version"])
    major, minor, *_ = text.split(".")
    return text, (int(major), int(minor))


def start_mode(mode: str, primary: RedisServer, emulator: Emulator, chunks: int) -> ModeRun:
    """A pipeline context in `mode` on its own keys, and a job of `chunks` pending chunks."""
    settings = Settings(
        redis_url=primary.url,
        key_prefix=f"bench-dw-{mode}",
        durable_writes=mode,
        max_batch_requests=REQUESTS_PER_CHUNK,
        api_rpm=1_000_000,
        max_in_flight_requests=1_000_000_000,
    )
    store = TimedStore(redis.Redis.from_url(settings.state), settings)
    dispatch = QuietDispatcher()
    ctx = Context(
        settings=settings,
        store=store,
        dispatch=dispatch,
        client_factory=lambda: anthropic.Anthropic(
            base_url=emulator.base_url, api_key=EMULATOR_KEY, max_retries=0
        ),
    )
    requests = [
        {"custom_id": f"r{i}", "prompt": f"question {i} ({mode})"}
        for i in range(chunks * REQUESTS_PER_CHUNK)
    ]
    job_id = f"bench-durable-{mode}"
    submit.submit(ctx, job_id=job_id, options=JobOptions(defaults=DEFAULTS), requests=requests)
    numbers = store.chunk_numbers(job_id)
    if len(numbers) != chunks:
        raise RuntimeError(f"{mode}: expected {chunks} chunks, the job has {len(numbers)}")
    return ModeRun(mode, ctx, store, dispatch, job_id, numbers)


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(ordered) * 1000, 3),
        "median": round(statistics.median(ordered) * 1000, 3),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 3),
    }


def summary(run: ModeRun) -> dict[str, Any]:
    seconds = sum(run.create_s)
    return {
        "available": True,
        "waits_for": run.store.durability.how(),
        "creates": len(run.create_s),
        "seconds": round(seconds, 3),
        "creates_per_s": round(len(run.create_s) / seconds, 1),
        "ms_per_create": _ms(run.create_s),
        "intent_ms": _ms(run.store.intent_s),
        "claim_ms": _ms(run.store.claim_s),
        "not_created": run.not_created,
        "polls_scheduled": run.dispatch.sent["batchline.poll_batch"],
    }


def run(workdir: Path, creates: int = DEFAULT_CREATES) -> dict[str, Any]:
    """Measure every mode the server has on `creates` creates each; the numbers per mode."""
    if creates < ROUNDS:
        raise ValueError(f"at least {ROUNDS} creates per mode (one per round)")
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stop:
        primary = RedisServer(workdir / "primary", appendonly=True).start()
        stop.callback(primary.stop)
        replica = ReplicaServer(workdir / "replica", primary).start()
        stop.callback(replica.stop)
        emulator = Emulator(workdir, "--processing-seconds", str(PROCESSING_S)).start()
        stop.callback(emulator.stop)
        r = primary.client()
        wait_for(
            lambda: replica.client().info("replication").get("master_link_status") == "up",
            60,
            what="the replica's link to the primary",
        )
        version, numbers = server_version(r)
        aof = bool(int(r.info("persistence")["aof_enabled"]))
        unavailable: dict[str, str] = {}
        if numbers < WAITAOF_SINCE:
            since = ".".join(map(str, WAITAOF_SINCE))
            unavailable["fsync"] = f"not available on Redis {version} (WAITAOF needs {since})"
        elif not aof:
            unavailable["fsync"] = "not available: the append-only file is off"
        modes = [m for m in MODES if m not in unavailable]
        runs = {m: start_mode(m, primary, emulator, WARMUP_CREATES + creates) for m in modes}
        for m in runs.values():
            m.create(WARMUP_CREATES)  # connections, scripts and the SDK client, untimed
            m.store.intent_s.clear()
            m.store.claim_s.clear()
            m.dispatch.sent.clear()
            m.not_created = 0
        # Turns: every mode makes a share of its creates in each round.
        for i in range(ROUNDS):
            share = creates // ROUNDS + (creates % ROUNDS if i == ROUNDS - 1 else 0)
            for m in runs.values():
                m.create_s += m.create(share)
        out: dict[str, Any] = {
            "creates": creates,
            "requests_per_create": REQUESTS_PER_CHUNK,
            "rounds": ROUNDS,
            "redis_version": version,
            "aof": aof,
            "replicas": int(r.info("replication")["connected_slaves"]),
            "auto_waits_for": Durability(r, "auto", 2.0).how(),
            "modes": {},
        }
        for mode in MODES:
            if mode in unavailable:
                out["modes"][mode] = {"available": False, "note": unavailable[mode]}
            else:
                out["modes"][mode] = summary(runs[mode])
        off = out["modes"]["off"]
        for mode, m in out["modes"].items():
            if mode != "off" and m["available"]:
                m["added_ms_per_create"] = round(
                    m["ms_per_create"]["mean"] - off["ms_per_create"]["mean"], 3
                )
                m["added_ms_intent_and_claim"] = round(
                    m["intent_ms"]["mean"]
                    + m["claim_ms"]["mean"]
                    - off["intent_ms"]["mean"]
                    - off["claim_ms"]["mean"],
                    3,
                )
        return out


# What each mode makes a create's intent and its batch's claim wait for, in the table.
WAITS = {
    "off": "off (no wait)",
    "replica": "replica (WAIT for 1 replica)",
    "fsync": "fsync (WAITAOF, local AOF)",
}


def rows(sections: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The bench table's rows (section, measure, value) for this section, if it ran."""
    dw = sections.get("durable_writes")
    if not dw:
        return []
    sec = (
        f"Durable writes ({dw['creates']:,} creates per mode, in turns; primary with AOF + "
        f"{dw['replicas']} replica, Redis {dw['redis_version']}; the emulator)"
    )
    out = []
    for mode, m in dw["modes"].items():
        label = WAITS.get(mode, mode)
        if not m["available"]:
            out.append((sec, label, m["note"]))
            continue
        per = m["ms_per_create"]
        value = (
            f"{m['creates_per_s']:,.0f} creates/s; {per['mean']:.2f} ms per create "
            f"(median {per['median']:.2f}, p95 {per['p95']:.2f})"
        )
        if "added_ms_per_create" in m:
            value += f"; {m['added_ms_per_create']:+.2f} ms per create vs off"
        out.append((sec, f"{label}: creates/s; ms per create", value))
        writes = (
            f"{m['intent_ms']['mean']:.2f} / {m['claim_ms']['mean']:.2f} ms (p95 "
            f"{m['intent_ms']['p95']:.2f} / {m['claim_ms']['p95']:.2f})"
        )
        if "added_ms_intent_and_claim" in m:
            writes += f"; {m['added_ms_intent_and_claim']:+.2f} ms per create vs off"
        if m["not_created"]:
            writes += f"; {m['not_created']} not created (not durable in time)"
        out.append((sec, f"{label}: intent / claim write, mean", writes))
    out.append((sec, "auto waits for (this server)", dw["auto_waits_for"] or "nothing more"))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--creates", type=int, default=DEFAULT_CREATES)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="batchline-durable-") as work:
        numbers = run(Path(work), args.creates)
    print(f"{numbers['creates']} creates per mode, Redis {numbers['redis_version']}:")
    for mode, m in numbers["modes"].items():
        if not m["available"]:
            print(f"  {mode:8} {m['note']}")
            continue
        added = m.get("added_ms_per_create")
        print(
            f"  {mode:8} {m['creates_per_s']:8,.1f} creates/s  {m['ms_per_create']['mean']:.2f} ms"
            f" per create" + ("" if added is None else f"  ({added:+.2f} ms over off)")
        )


if __name__ == "__main__":
    main()
