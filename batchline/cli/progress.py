"""Live job progress for the terminal: rich bars on a TTY, plain lines otherwise."""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

PLAIN_EVERY_S = 5.0  # at most one plain line this often, unless the job ended
FINAL_STATES = ("completed", "canceled")
# A batch's state (its chunk's, batchline.store.ChunkState) as an operator reads it.
WAITING_BATCH_STATES = ("pending",)
AT_API_BATCH_STATES = ("creating", "in_progress")  # being made, or running at the API
READING_BATCH_STATES = ("ended",)  # ended at the API; its results being read and recorded
CLOSED_BATCH_STATES = ("done", "failed", "canceled", "split")
BATCH_PHASES = {
    "pending": "waiting",
    "creating": "creating",
    "in_progress": "at the API",
    "ended": "reading results",
}
BAR_CHAR = "━"
# The rate is requests finished over this many seconds of what the watcher saw.
RATE_WINDOW_S = 30.0
# Under this much time seen, there is no rate yet.
RATE_MIN_SPAN_S = 1.0

# Request states in the order they fill the bar, with their colours.
REQUEST_COLORS = {
    "succeeded": "green",
    "failed": "red",
    "canceled": "yellow",
    "rejected": "magenta",
}
STATE_STYLES = {"completed": "bold green", "canceled": "bold yellow", "canceling": "bold yellow"}


@dataclass(frozen=True)
class Snapshot:
    """The numbers a person wants from a job's status, computed once per update."""

    job_id: str
    state: str
    total: int
    succeeded: int
    failed: int
    canceled: int
    rejected: int
    in_flight: int
    batches: int
    batches_at_api: int
    batches_reading: int
    batches_waiting: int
    batches_blocked: int
    batches_closed: int
    reading_requests: int
    reading_recorded: int
    retry_batches: int
    retried_requests: int
    failure_reasons: tuple[tuple[str, int], ...]
    elapsed_s: float
    cost_usd: float
    estimated_cost_usd: float

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.canceled + self.rejected

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def key(self) -> tuple[Any, ...]:
        """Everything but the clock: a plain line is printed only when this changes."""
        return (
            self.state,
            self.done,
            self.succeeded,
            self.failed,
            self.in_flight,
            self.batches,
            self.batches_at_api,
            self.batches_reading,
            self.batches_closed,
        )


def snapshot(st: dict[str, Any], now: float | None = None) -> Snapshot:
    """A Snapshot of a status dict (as `Client.status` returns it)."""
    c = st["counts"]
    batches = st.get("batches") or []
    submitted = float(st.get("submitted_at") or 0)
    end = st.get("ended_at") or (time.time() if now is None else now)
    cost = float(st.get("cost_usd") or 0)
    reading = [b for b in batches if b["status"] in READING_BATCH_STATES]
    return Snapshot(
        job_id=st["job_id"],
        state=st["state"],
        total=int(c["total"]),
        succeeded=int(c["succeeded"]),
        failed=int(c["failed"]),
        canceled=int(c["canceled"]),
        rejected=int(c["rejected"]),
        in_flight=max(0, int(c["in_flight"])),
        batches=len(batches),
        batches_at_api=sum(1 for b in batches if b["status"] in AT_API_BATCH_STATES),
        batches_reading=len(reading),
        batches_waiting=sum(1 for b in batches if b["status"] in WAITING_BATCH_STATES),
        batches_blocked=sum(1 for b in batches if b["status"] == "blocked"),
        batches_closed=sum(1 for b in batches if b["status"] in CLOSED_BATCH_STATES),
        reading_requests=sum(int(b.get("requests") or 0) for b in reading),
        reading_recorded=sum(int(b.get("processed") or 0) for b in reading),
        retry_batches=sum(1 for b in batches if int(b.get("attempt") or 1) > 1),
        retried_requests=int(st.get("retried_requests") or 0),
        failure_reasons=tuple(
            (str(r["error_type"]), int(r["count"])) for r in st.get("failure_reasons") or ()
        ),
        elapsed_s=max(0.0, float(end) - submitted) if submitted else 0.0,
        cost_usd=cost,
        estimated_cost_usd=_estimate(st, cost),
    )


def _estimate(st: dict[str, Any], cost: float) -> float:
    """The job's likely total cost.

    Once requests have succeeded, their average cost times the requests still in flight,
    plus what was spent; before that, the upper bound made at submit time (every prompt
    plus max_tokens of output).
    """
    c = st["counts"]
    if c["succeeded"] > 0 and cost > 0:
        return cost + cost / c["succeeded"] * max(0, c["in_flight"])
    if st["state"] in FINAL_STATES:
        return cost
    return max(cost, float(st.get("estimated_cost_usd") or 0))


def duration(seconds: float) -> str:
    """0:00:42, 1:02:03, 2d 3:04:05."""
    s = int(seconds)
    days, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    clock = f"{h}:{m:02d}:{s:02d}"
    return f"{days}d {clock}" if days else clock


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _batches(n: int) -> str:
    return f"{n} batch" if n == 1 else f"{n} batches"


def phase(s: Snapshot) -> str:
    """Where the job's work is: waiting to be sent, at the API, reading results, ...

    A batch is at the API from its create until the API says it ended; it is reading
    results from then until every one of its results is recorded (the job's counts grow
    only then, so a job whose only batch is being read shows few requests done).
    """
    if s.final or s.state == "canceling":
        return s.state
    parts = []
    if s.batches_reading:
        parts.append(
            f"reading results of {_batches(s.batches_reading)} "
            f"({s.reading_recorded:,}/{s.reading_requests:,} recorded)"
        )
    if s.batches_at_api:
        parts.append(f"{_batches(s.batches_at_api)} at the API")
    if s.batches_blocked:
        parts.append(f"{_batches(s.batches_blocked)} blocked")
    if s.batches_waiting:
        parts.append(f"{_batches(s.batches_waiting)} waiting to be sent")
    if len(parts) > 1:
        return f"{', '.join(parts[:-1])} and {parts[-1]}"
    if parts:
        return parts[0]
    return "validating and storing the requests" if s.state == "pending" else "finishing"


class RateMeter:
    """Requests finished per second over the last RATE_WINDOW_S seconds of updates seen.

    Each update adds the job's finished count; the rate is the count gained since the last
    update at least the window old (or the first one seen), over the time between them.
    """

    def __init__(
        self, window_s: float = RATE_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ):
        self.window_s = window_s
        self.clock = clock
        self._seen: deque[tuple[float, int]] = deque()

    def add(self, done: int, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self._seen.append((now, done))
        while len(self._seen) > 2 and self._seen[1][0] <= now - self.window_s:
            self._seen.popleft()

    def rate(self) -> float | None:
        """Requests a second, or None until updates span RATE_MIN_SPAN_S."""
        if len(self._seen) < 2:
            return None
        (t0, d0), (t1, d1) = self._seen[0], self._seen[-1]
        if t1 - t0 < RATE_MIN_SPAN_S:
            return None
        return max(0, d1 - d0) / (t1 - t0)


def _per_s(rate: float) -> str:
    return f"{rate:,.0f} requests/s" if rate >= 100 else f"{rate:.1f} requests/s"


def pace(s: Snapshot, rate: float | None) -> str:
    """The rate (a RateMeter's) and the time left at that rate; a finished job's average."""
    if s.final:
        average = s.done / s.elapsed_s if s.elapsed_s > 0 else 0.0
        return f"{_per_s(average)} on average"
    if rate is None:
        return "measuring, ETA unknown"
    window = f"(last {RATE_WINDOW_S:.0f} s)"
    if rate <= 0:
        return f"{_per_s(0)} {window}, ETA unknown"
    left = max(0, s.total - s.done)
    return f"{_per_s(rate)} {window}, ETA {duration(math.ceil(left / rate))}"


def failure_text(s: Snapshot) -> str | None:
    """The top failure reasons ("invalid_request_error 3, api_error 2"), or why none show."""
    if s.failure_reasons:
        return ", ".join(f"{t} {n:,}" for t, n in s.failure_reasons)
    if s.failed:
        return f"not recorded for this job (`batchline results {s.job_id}` has each error)"
    return None


def cost_text(s: Snapshot) -> str:
    """`cost $X` once the job ended; `cost so far $X (est. $Y)` while it runs."""
    if s.final:
        return f"cost ${s.cost_usd:.4f}"
    return f"cost so far ${s.cost_usd:.4f} (est. ${s.estimated_cost_usd:.4f})"


def summary_line(
    st: dict[str, Any], now: float | None = None, rate: float | None = None, *, paced: bool = False
) -> str:
    """One line: state (and phase), requests by state, batches, elapsed time and cost; with
    `paced` (a watcher that measured `rate`), the rate and the ETA too."""
    s = snapshot(st, now)
    head = s.state if s.final or s.state == "canceling" else f"{s.state}, {phase(s)}"
    parts = [
        f"{s.job_id} {head}: {s.done:,}/{s.total:,} done ({_pct(s.done, s.total)})",
        f"{s.succeeded:,} succeeded, {s.failed:,} failed, {s.canceled:,} canceled, "
        f"{s.rejected:,} rejected, {s.in_flight:,} in flight",
        f"batches {s.batches_closed}/{s.batches} closed, {s.batches_at_api} at the API, "
        f"{s.batches_reading} reading results, {s.batches_waiting} waiting, "
        f"{s.retry_batches} retry",
        f"{s.retried_requests:,} requests retried",
    ]
    if paced and not s.final:
        parts.append(f"rate {pace(s, rate)}")
    parts += [f"elapsed {duration(s.elapsed_s)}", cost_text(s)]
    return "; ".join(parts)


def stacked_bar(parts: list[tuple[int, str]], whole: int, width: int = 40) -> Text:
    """A bar filled by consecutive coloured parts (succeeded, failed, ...) of a whole."""
    bar = Text()
    whole = max(1, whole)
    used = filled = 0
    for value, color in parts:
        filled += value
        # Cells up to this part's running total, so rounding never loses a cell.
        end = min(width, round(width * filled / whole))
        if value > 0 and end == used and used < width:
            end = used + 1  # a part that exists is always visible
        if end > used:
            bar.append(BAR_CHAR * (end - used), style=color)
            used = end
    if used < width:
        bar.append(BAR_CHAR * (width - used), style="bright_black")
    return bar


class JobProgress:
    """Call update(status) repeatedly; close() when done.

    On a terminal: a live view with the job's phase, a bar of requests by state, a bar of
    batches, the rate and ETA, the elapsed time, the cost and the top failure reasons.
    Elsewhere (a pipe, a log file, CI): a plain line whenever something changed, at most
    every PLAIN_EVERY_S seconds, and always the last one.
    """

    def __init__(
        self,
        console: Console | None = None,
        plain: bool | None = None,
        stream: TextIO | None = None,
        meter: RateMeter | None = None,
    ):
        self.console = console or Console(stderr=True)
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self.stream = stream
        self.meter = meter or RateMeter()
        self._last_plain = 0.0
        self._last_key: tuple[Any, ...] | None = None
        self._status: dict[str, Any] | None = None
        self._live: Live | None = None

    def update(self, st: dict[str, Any]) -> None:
        self.meter.add(snapshot(st).done)
        if self.plain:
            self._plain(st)
            return
        self._status = st
        if self._live is None:
            self._live = Live(
                console=self.console,
                get_renderable=self._render,
                refresh_per_second=4,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        self._live.refresh()

    def _plain(self, st: dict[str, Any]) -> None:
        s = snapshot(st)
        now = time.monotonic()
        if s.key() == self._last_key:
            return
        if not s.final and self._last_key is not None and now - self._last_plain < PLAIN_EVERY_S:
            return
        line = summary_line(st, rate=self.meter.rate(), paced=True)
        print(line, file=self.stream or sys.stderr, flush=True)
        self._last_plain, self._last_key = now, s.key()

    def _render(self) -> Group:
        if self._status is None:
            return Group()
        s = snapshot(self._status)
        width = max(10, min(50, self.console.width - 30))

        def row(label: str, *body: Text | str | tuple[str, str]) -> Text:
            return Text.assemble((f"{label:>9} ", "dim"), *body)

        counts = Text()
        for name, color in REQUEST_COLORS.items():
            counts.append(f"{getattr(s, name):,} {name}", style=color)
            counts.append("  ")
        counts.append(f"{s.in_flight:,} in flight", style="cyan")
        if s.final:
            cost = Text(f"${s.cost_usd:.4f}")
        else:
            cost = Text(f"${s.cost_usd:.4f} so far")
            cost.append(f"  est. ${s.estimated_cost_usd:.4f}", style="dim")
        rows = [
            row("job", (s.job_id, "bold"), "  ", (s.state, STATE_STYLES.get(s.state, "bold cyan")))
        ]
        if not s.final:
            rows.append(row("phase", (phase(s), "cyan")))
        rows += [
            row(
                "requests",
                stacked_bar(
                    [(getattr(s, name), color) for name, color in REQUEST_COLORS.items()],
                    s.total,
                    width,
                ),
                f" {s.done:,}/{s.total:,} {_pct(s.done, s.total)}",
            ),
            row("", counts),
            row(
                "batches",
                stacked_bar(
                    [
                        (s.batches_closed, "green"),
                        (s.batches_reading, "blue"),
                        (s.batches_at_api, "cyan"),
                    ],
                    s.batches,
                    width,
                ),
                f" {s.batches_closed}/{s.batches} closed",
            ),
            row(
                "",
                (
                    f"{s.batches_at_api} at the API  {s.batches_reading} reading results  "
                    f"{s.batches_waiting} waiting  {s.retry_batches} retry  "
                    f"({s.retried_requests:,} requests retried)",
                    "dim",
                ),
            ),
            row("rate", pace(s, self.meter.rate())),
            row("elapsed", duration(s.elapsed_s)),
            row("cost", cost),
        ]
        failures = failure_text(s)
        if failures:
            rows.append(row("failures", (failures, "red")))
        return Group(*rows)

    def close(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None
