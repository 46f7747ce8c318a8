"""Live job progress for the terminal: rich bars on a TTY, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

PLAIN_EVERY_S = 5.0  # at most one plain line this often, unless the job ended
FINAL_STATES = ("completed", "canceled")
LIVE_BATCH_STATES = ("creating", "in_progress", "ended")
CLOSED_BATCH_STATES = ("done", "failed", "canceled")
BAR_CHAR = "━"

# Request states in the order they fill the bar, with their colours.
REQUEST_COLORS = {
    "succeeded": "green",
    "failed": "red",
    "canceled": "yellow",
    "rejected": "magenta",
}


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
    batches_live: int
    batches_waiting: int
    batches_closed: int
    retry_batches: int
    retried: int
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
            self.batches_live,
            self.batches_closed,
        )


def snapshot(st: dict[str, Any], now: float | None = None) -> Snapshot:
    """A Snapshot of a status dict (as `Client.status` returns it)."""
    c = st["counts"]
    batches = st.get("batches") or []
    submitted = float(st.get("submitted_at") or 0)
    end = st.get("ended_at") or (time.time() if now is None else now)
    cost = float(st.get("cost_usd") or 0)
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
        batches_live=sum(1 for b in batches if b["status"] in LIVE_BATCH_STATES),
        batches_waiting=sum(1 for b in batches if b["status"] == "pending"),
        batches_closed=sum(1 for b in batches if b["status"] in CLOSED_BATCH_STATES),
        retry_batches=sum(1 for b in batches if int(b.get("attempt") or 1) > 1),
        retried=int(st.get("retried") or 0),
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


def summary_line(st: dict[str, Any], now: float | None = None) -> str:
    """One line: state, requests by state, batches, elapsed time and cost."""
    s = snapshot(st, now)
    parts = [
        f"{s.job_id} {s.state}: {s.done:,}/{s.total:,} done ({_pct(s.done, s.total)})",
        f"{s.succeeded:,} succeeded, {s.failed:,} failed, {s.canceled:,} canceled, "
        f"{s.rejected:,} rejected, {s.in_flight:,} in flight",
        f"batches {s.batches_closed}/{s.batches} closed, {s.batches_live} live, "
        f"{s.batches_waiting} waiting, {s.retry_batches} retry",
        f"retried {s.retried:,}",
        f"elapsed {duration(s.elapsed_s)}",
        f"cost ${s.cost_usd:.4f}" + ("" if s.final else f" (est. ${s.estimated_cost_usd:.4f})"),
    ]
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

    On a terminal: a live view with a bar of requests by state, a bar of batches, the
    elapsed time and the cost. Elsewhere (a pipe, a log file, CI): a plain line whenever
    something changed, at most every PLAIN_EVERY_S seconds, and always the last one.
    """

    def __init__(
        self,
        console: Console | None = None,
        plain: bool | None = None,
        stream: TextIO | None = None,
    ):
        self.console = console or Console(stderr=True)
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self.stream = stream
        self._last_plain = 0.0
        self._last_key: tuple[Any, ...] | None = None
        self._status: dict[str, Any] | None = None
        self._live: Live | None = None

    def update(self, st: dict[str, Any]) -> None:
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
        print(summary_line(st), file=self.stream or sys.stderr, flush=True)
        self._last_plain, self._last_key = now, s.key()

    def _render(self) -> Group:
        if self._status is None:
            return Group()
        s = snapshot(self._status)
        width = max(10, min(50, self.console.width - 30))

        def row(label: str, *body: Text | str | tuple[str, str]) -> Text:
            return Text.assemble((f"{label:>9} ", "dim"), *body)

        state_style = "bold green" if s.state == "completed" else "bold cyan"
        counts = Text()
        for name, color in REQUEST_COLORS.items():
            counts.append(f"{getattr(s, name):,} {name}", style=color)
            counts.append("  ")
        counts.append(f"{s.in_flight:,} in flight", style="cyan")
        cost = Text(f"${s.cost_usd:.4f} so far")
        if not s.final:
            cost.append(f"  est. ${s.estimated_cost_usd:.4f}", style="dim")
        return Group(
            row("job", (s.job_id, "bold"), "  ", (s.state, state_style)),
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
                    [(s.batches_closed, "green"), (s.batches_live, "cyan")], s.batches, width
                ),
                f" {s.batches_closed}/{s.batches} closed",
            ),
            row(
                "",
                (
                    f"{s.batches_live} live  {s.batches_waiting} waiting  "
                    f"{s.retry_batches} retry  ({s.retried:,} requests retried)",
                    "dim",
                ),
            ),
            row("elapsed", duration(s.elapsed_s)),
            row("cost", cost),
        )

    def close(self) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None
