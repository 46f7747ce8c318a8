"""Recovery in minutes with the default broker settings: a worker killed (SIGKILL) in any stage,
or stopped and replaced (SIGTERM), never stalls a job for the broker's visibility timeout.

Every test here keeps the broker's visibility timeout (3,600 s), leases and stall detection
at their defaults, so neither the broker's own redelivery nor the sweep can be what brings
the work back. Each prints what it measured (run with -s to see it).
"""

from __future__ import annotations

import base64
import signal
import threading
import time
from collections import Counter
from typing import Any

import orjson
import pytest

from batchline import lease as leases
from batchline.devstack import RESULTS_WORKER_ARGS, RESULTS_WORKER_ENV
from batchline.liveness import LivenessKeys, read_reports, waits
from batchline.settings import Settings
from tests.support.jobs import check_records, chunk_field, prompts
from tests.support.jobs import submit_with_hooks as submit
from tests.support.procs import Worker, as_deployed, recovery_as_deployed, wait_for

# Everything that decides recovery is at its default (recovery_as_deployed): the visibility
# timeout, leases, the stall window the default polls give (about 11 minutes, not the 61 s
# FAST's short polls would derive, so the sweep cannot be what brings anything back on a
# loaded machine either; the poll test checks that it did not), the death detection
# (worker_dead_after_s, 20 s) and the recovery pass's interval (15 s). FAST's poll intervals
# stay (a batch's wait takes a second, not minutes), and so does its sweep interval (1 s).
DEFAULTS_BACK = recovery_as_deployed()
SETTINGS = Settings()  # as the workers run
DEAD_AFTER_S = SETTINGS.worker_dead_after_s
RECOVERY_INTERVAL_S = SETTINGS.recovery_interval_s
# Kill to work restarting: the heartbeat's silence, up to two passes (one may have just been
# missed), and room for a loaded machine.
RESTART_BOUND_S = DEAD_AFTER_S + 2 * RECOVERY_INTERVAL_S + 30
# Kill to job completion: well within the promised 5 minutes (most of it is processing
# results, on a machine running other tests at the same time).
COMPLETE_BOUND_S = 240


def start(stack_factory: Any, *emulator_args: str, **settings: Any) -> Any:
    """A stack with default visibility timeout, lease and stall settings, beat and hooks."""
    st = stack_factory(*emulator_args, **{**DEFAULTS_BACK, **settings})
    # The workers run with the broker's visibility timeout a user has (an hour), so only the
    # recovery pass can bring back what a dead worker held within these tests' bounds.
    deployed = as_deployed("visibility_timeout_s")["visibility_timeout_s"]
    assert float(st.env["BATCHLINE_VISIBILITY_TIMEOUT_S"]) == deployed == 3600
    assert float(st.env["BATCHLINE_RECOVERY_INTERVAL_S"]) == RECOVERY_INTERVAL_S == 15
    st.start_hooks()
    st.start_beat()
    return st


def recovery_stats(st: Any) -> Counter[str]:
    raw = st.redis.client().hgetall("bl:stats")
    return Counter(
        {
            k.decode().removeprefix("recovery:"): int(v)
            for k, v in raw.items()
            if k.startswith(b"recovery:")
        }
    )


class Clock:
    """Times from a kill (or stop) to each milestone, printed at the end."""

    def __init__(self, name: str):
        self.name = name
        self.t0 = time.monotonic()
        self.marks: dict[str, float] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, what: str) -> float:
        self.marks[what] = round(time.monotonic() - self.t0, 1)
        return self.marks[what]

    def report(self) -> None:
        parts = ", ".join(f"{what} after {s:.1f} s" for what, s in self.marks.items())
        print(f"\n[recovery] {self.name}: {parts}")


def check_exactly_once(st: Any, job_id: str, reqs: list[dict[str, Any]], clock: Clock) -> None:
    """Completed in time, one record per custom_id with its own answer, one hook each, no
    batch made twice."""
    final = st.client.wait(job_id, timeout_s=max(1.0, COMPLETE_BOUND_S - clock.elapsed()))
    assert clock.mark("job completed") < COMPLETE_BOUND_S
    assert final["state"] == "completed"
    states = check_records(reqs, list(st.client.results(job_id)))
    assert states == {"succeeded": len(reqs)}
    r = st.redis.client()
    key = f"hooks:{job_id}:results"
    wait_for(lambda: r.llen(key) >= len(reqs), 30, what="every hook")
    time.sleep(0.5)  # a second copy of a hook would land by now
    calls = Counter(orjson.loads(x)["custom_id"] for x in r.lrange(key, 0, -1))
    assert calls == Counter({q["custom_id"]: 1 for q in reqs}), calls.most_common(3)
    stats = st.emulator.stats()
    digests = [b["custom_ids_digest"] for b in stats["batches"]]
    assert len(digests) == len(set(digests)), "the same requests were sent twice"


def wait_restarted(
    st: Any, clock: Clock, what: str = "restored", within_s: float = RESTART_BOUND_S
) -> float:
    """Until the recovery pass has handed something over; seconds since the kill."""
    wait_for(
        lambda: recovery_stats(st)[what] > 0,
        within_s,
        interval=0.2,
        what=f"the recovery pass ({what})",
    )
    return clock.mark("work restarted")


def node_of_lease(st: Any, name: str) -> str:
    """The node name of the worker holding a lease (from the alive key in its value)."""
    raw = st.redis.client().get(f"bl:lease:{name}")
    assert raw, f"nobody holds {name}"
    alive_key = raw.decode().partition(leases.SEP)[2]
    return alive_key.removeprefix("bl:worker:").split(":")[0]


# --- SIGKILL ---


def unrecorded_in_hand(st: Any, job_id: str, n: int) -> bool:
    """Without ack emulation: some of the job's results are neither recorded nor waiting in
    the queue, at every one of many instants. The one other (solo) results worker holds one
    result at a time, and none between two: what stays out of the queue at the instants it
    holds none is held by the frozen worker."""
    r = st.redis.client()
    least = n
    for _ in range(50):
        pipe = r.pipeline(transaction=True)  # one instant
        pipe.hget(f"bl:job:{job_id}:c:0", "processed")
        pipe.llen("results")
        done, queued = pipe.execute()
        least = min(least, n - int(done or 0) - queued)
        time.sleep(0.01)
    return least > 0


def stuck_unrecorded(st: Any, job_id: str) -> bool:
    """Some of the job's results stay unacknowledged for two seconds (their worker is frozen:
    a live one acknowledges within milliseconds) and are not recorded."""
    r = st.redis.client()
    before = set(r.hkeys("unacked"))
    time.sleep(2)
    for tag in before & set(r.hkeys("unacked")):
        raw = r.hget("unacked", tag)
        if raw is None:
            continue
        payload = orjson.loads(raw)[0]
        args = orjson.loads(base64.b64decode(payload["body"]))[0]
        ours = payload["headers"].get("task") == "batchline.process_result" and args[0] == job_id
        if ours and r.hexists(f"bl:job:{job_id}:c:0:raw", args[3]):
            return True
    return False


def freeze_mid_results(
    st: Any, worker: Worker, name: str, n: int
) -> tuple[str, list[dict[str, Any]], Clock]:
    """Submit a job and freeze (SIGSTOP) `worker` while it holds a result not yet recorded.
    A freeze that caught it holding none (between two results, or after recording the one in
    hand) is undone and tried again, with a new job once this one has finished. Returns the
    job, its requests and a clock started at the freeze (the worker's heartbeat stops there).

    With ack emulation what it holds is seen in the broker's unacked set; without, only by
    counting what is neither recorded nor queued."""
    r = st.redis.client()
    acked = "BATCHLINE_BROKER_ACK_EMULATION" not in worker.env
    for attempt in range(12):
        reqs = prompts(n, prefix=f"q{attempt}-")
        job_id = submit(st, reqs)

        def deep() -> bool:
            # every result published (no fan-out to catch), many still waiting
            done = chunk_field(st, job_id, "fanout_done") == "1"  # noqa: B023
            return done and r.llen("results") > 100

        wait_for(deep, 60, interval=0.002, what="results under way")
        while deep():
            worker.signal_group(signal.SIGSTOP)
            clock = Clock(name)
            if acked and stuck_unrecorded(st, job_id):
                return job_id, reqs, clock
            if not acked and unrecorded_in_hand(st, job_id, n):
                return job_id, reqs, clock
            worker.signal_group(signal.SIGCONT)
            time.sleep(0.05)
        st.client.wait(job_id, timeout_s=60)
    raise AssertionError("the worker was never caught holding a result")


def test_sigkill_of_a_default_worker_mid_results(stack_factory: Any) -> None:
    # Given two workers as the quick start runs them (every queue, prefork, ack emulation)
    st = start(stack_factory, "--processing-seconds", "0.5")
    with st.starting():
        a = st.worker(name="a")
        st.worker(name="b")
    # When one of them stops (frozen, then killed) while it holds results being processed,
    # and the other has done everything else
    job_id, reqs, clock = freeze_mid_results(st, a, "default worker killed mid-results", 1500)
    a.kill()
    clock.mark("killed")
    # Then the job's status says what it waits for, and until when
    found = wait_for(
        lambda: [w for w in waits(st.redis.client(), SETTINGS, job_id) if w.worker == a.name],
        DEAD_AFTER_S,
        interval=0.2,
        what="a wait on the killed worker",
    )
    assert found[0].kind in ("worker_silent", "worker_dead") and found[0].messages >= 1
    assert found[0].until <= time.time() + DEAD_AFTER_S + RECOVERY_INTERVAL_S + 1
    # And what it held is handed to the other worker once it is found dead, and the job
    # completes exactly once, well within a minute
    assert wait_restarted(st, clock) >= DEAD_AFTER_S - 6  # not before it could be known dead
    check_exactly_once(st, job_id, reqs, clock)
    assert recovery_stats(st)["dead"] == 1
    clock.report()


def test_sigkill_of_a_results_worker_without_ack_emulation_mid_results(
    stack_factory: Any,
) -> None:
    # Given the results stage on its own workers, without ack emulation (what a killed one
    # holds is nowhere in Redis)
    st = start(stack_factory, "--processing-seconds", "0.5")
    st.worker(queues=["ingest", "events", "api"], name="main")
    doomed = st.results_worker("r1")
    st.results_worker("r2")
    # When one stops (frozen, then killed) while it holds a result being processed
    job_id, reqs, clock = freeze_mid_results(
        st, doomed, "results worker (solo, no ack emulation) killed mid-results", 1500
    )
    doomed.kill()
    clock.mark("killed")
    # Then once it is found dead, with the results queue drained and nobody else holding the
    # chunk's results, the results still unprocessed are published again, and the job
    # completes exactly once
    wait_restarted(st, clock, "republished")
    check_exactly_once(st, job_id, reqs, clock)
    assert recovery_stats(st)["dead"] == 1
    clock.report()


def test_sigkill_of_the_worker_holding_the_poll_chains(stack_factory: Any) -> None:
    # Given an api worker holding three batches' poll chains (each a countdown message)
    st = start(stack_factory, "--processing-seconds", "6", max_batch_requests=100)
    with st.starting():
        st.worker(queues=["ingest", "events", "results"], name="main")
        api = st.worker(queues=["api"], name="api")
    reqs = prompts(300)
    job_id = submit(st, reqs)
    wait_for(
        lambda: all(int(chunk_field(st, job_id, "poll_step", n) or 0) >= 1 for n in range(3)),
        30,
        what="three poll chains",
    )
    gens = [chunk_field(st, job_id, "poll_gen", n) for n in range(3)]
    # When it is killed, and a new api worker takes its place
    api.kill()
    clock = Clock("api worker holding 3 poll chains killed")
    st.worker(queues=["api"], name="api2")
    # Then the chains it held are handed to the new worker (the same chains: no sweep re-arm
    # with a new generation), and the job completes exactly once
    wait_restarted(st, clock)
    check_exactly_once(st, job_id, reqs, clock)
    assert [chunk_field(st, job_id, "poll_gen", n) for n in range(3)] == gens
    clock.report()


@pytest.mark.parametrize("kind", ["results-worker", "default-worker"])
def test_sigkill_mid_fan_out(stack_factory: Any, kind: str) -> None:
    # Given two workers that can run a batch's fan-out
    st = start(stack_factory, "--processing-seconds", "0.5")
    with st.starting():
        if kind == "results-worker":
            st.worker(queues=["ingest", "events", "api"], name="main")
            workers = [st.results_worker("r1"), st.results_worker("r2")]
        else:
            workers = [st.worker(name="a"), st.worker(name="b")]
    reqs = prompts(3000)
    job_id = submit(st, reqs)
    r = st.redis.client()
    # (a slice of its results stored, and not the last)
    wait_for(
        lambda: r.hlen(f"bl:job:{job_id}:c:0:raw") and not chunk_field(st, job_id, "fanout_done"),
        60,
        interval=0.002,
        what="a fan-out under way",
    )
    # When the worker running the fan-out is killed mid-stream
    runner = node_of_lease(st, f"fanout:{job_id}:0")
    doomed = next(w for w in workers if w.name == runner)
    doomed.kill()
    clock = Clock(f"{kind} killed mid fan-out")
    position = r.hlen(f"bl:job:{job_id}:c:0:raw") + int(chunk_field(st, job_id, "processed") or 0)
    # Then another worker takes over the dead one's lease at once and resumes the stream
    what = "fan_outs" if kind == "results-worker" else "restored"
    wait_restarted(st, clock, what)
    wait_for(lambda: chunk_field(st, job_id, "fanout_done") == "1", 30, what="the fan-out")
    clock.mark("fan-out finished")
    check_exactly_once(st, job_id, reqs, clock)
    assert int(chunk_field(st, job_id, "fanout_runs")) == 2  # one run killed, one resumed
    assert 0 < position < len(reqs)
    clock.report()


# --- SIGTERM ---


class Progress:
    """Samples a chunk's processed count in the background: the longest time it stood still."""

    def __init__(self, st: Any, job_id: str):
        self.st, self.job_id = st, job_id
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        r = self.st.redis.client()
        key = f"bl:job:{self.job_id}:c:0"
        last, since = None, time.monotonic()
        while not self._stop.wait(0.1):
            processed = r.hget(key, "processed")
            now = time.monotonic()
            if processed != last:
                last, since = processed, now
            self.longest = max(self.longest, now - since)
            if processed is not None and int(processed) >= int(r.hget(key, "count") or 0):
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(5)
        return self.longest


def test_a_rolling_restart_of_every_results_worker_costs_no_stall(stack_factory: Any) -> None:
    # Given two results workers and a job whose results are being streamed and processed
    st = start(stack_factory, "--processing-seconds", "0.5")
    st.worker(queues=["ingest", "events", "api"], name="main")
    fleet = [st.results_worker("r1"), st.results_worker("r2")]
    reqs = prompts(3000)
    job_id = submit(st, reqs)
    wait_for(
        lambda: chunk_field(st, job_id, "fanout_started_at"), 60, interval=0.01, what="results"
    )
    progress = Progress(st, job_id)
    # When each is stopped as docker compose or Kubernetes stops it (SIGTERM to the main
    # process), waited for, and replaced by a new process, one after the other
    clock = Clock("rolling restart of 2 results workers")
    for i, old in enumerate(fleet):
        assert old.stop_gracefully(timeout=60), "a warm shutdown ends by itself"
        clock.mark(f"r{i + 1} stopped")
        st.results_worker(f"r{i + 1}b")
        clock.mark(f"r{i + 1} replaced")
    # Then the job completes exactly once, and its results never stood still long enough
    # for anything to have been lost (a lost message costs at least worker_dead_after_s)
    check_exactly_once(st, job_id, reqs, clock)
    longest = progress.stop()
    print(f"[recovery] rolling restart: results stood still at most {longest:.1f} s")
    assert longest < DEAD_AFTER_S
    # And nothing waited on recovery: no worker died, nothing was restored or published again
    stats = recovery_stats(st)
    assert not stats["dead"] and not stats["restored"] and not stats["republished"], stats
    reports, _ = read_reports(st.redis.client(), LivenessKeys("bl"))
    assert not [rep for rep in reports if rep.dead]
    clock.report()


@pytest.mark.parametrize("ack_emulation", [True, False])
def test_a_warm_shutdown_gives_back_every_message_the_worker_holds(
    stack_factory: Any, ack_emulation: bool
) -> None:
    # Given a worker holding messages it has not run: waiting for their countdown
    st = stack_factory(**DEFAULTS_BACK)
    env = {} if ack_emulation else RESULTS_WORKER_ENV
    extra = () if ack_emulation else RESULTS_WORKER_ARGS
    w = st.worker(queues=["results"], name="held", concurrency=1, extra=extra, env=env)
    app = st.client.app
    for i in range(20):
        app.send_task("batchline.process_result", args=("no-job", 0, "b", f"c{i}"), countdown=600)
    r = st.redis.client()
    wait_for(lambda: r.llen("results") == 0, 20, what="the worker to take them")
    held = wait_for(
        lambda: [rep for rep in read_reports(r, LivenessKeys("bl"))[0] if len(rep.held) == 20],
        20,
        what="its heartbeat to list them",
    )
    assert {h.task for h in held[0].held} == {"batchline.process_result"}
    # When it is stopped with SIGTERM (its main process only)
    assert w.stop_gracefully(timeout=30)
    # Then kombu put every one back on the queue, nothing stays unacknowledged, and the
    # worker said goodbye (it is not taken for dead)
    assert r.llen("results") == 20
    assert r.hlen("unacked") == 0
    reports, _ = read_reports(r, LivenessKeys("bl"))
    assert [rep.state for rep in reports] == ["stopped"]


def test_a_lease_held_by_a_dead_worker_is_taken_over_at_once(redis_server: Any) -> None:
    r = redis_server.client()
    keys = LivenessKeys("bl")
    dead = leases.Holder(keys.alive("dead"), keys.report("dead"))
    live = leases.Holder(keys.alive("live"), keys.report("live"))
    r.set(dead.alive_key, "1", px=60_000)
    r.set(live.alive_key, "1", px=60_000)
    try:
        # Given a fan-out lease taken by a worker that then stops heartbeating
        leases.set_holder(dead)
        assert leases.Lease(r, "bl:lease:fanout:j:0", 60).acquire()
        leases.set_holder(live)
        other = leases.Lease(r, "bl:lease:fanout:j:0", 60)
        assert not other.acquire() and other.state() == leases.HELD
        r.delete(dead.alive_key)
        # Then the lease counts as orphaned, and the next acquire takes it over (60 s early)
        assert other.state() == leases.ORPHANED and not other.held()
        assert other.acquire() and other.state() == leases.HELD
        assert other.renew()
        # And when its own worker begins a warm shutdown, the fan-out's renewal fails (it
        # hands over), while a lease of a step that cannot resume keeps renewing
        r.hset(live.report_key, "state", "stopping")
        assert not other.renew()
        create = leases.Lease(r, "bl:lease:create:j:0", 60)
        assert create.acquire() and create.renew()
    finally:
        leases.set_holder(None)
