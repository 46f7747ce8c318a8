"""Live job progress for the terminal: rich bars on a TTY, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

PLAIN_EVERY_S = 5.0


def summary_line(st: dict[str, Any]) -> str:
    c = st["counts"]
    batches = st.get("batches") or []
    live = sum(1 for b in batches if b["status"] in ("creating", "in_progress", "ended"))
    return (
        f"{st['job_id']} {st['state']}: {c['succeeded']} succeeded, {c['failed']} failed, "
        f"{c['canceled']} canceled, {c['rejected']} rejected, {c['in_flight']} in flight; "
        f"batches {len(batches)} ({live} live); retried {st.get('retried', 0)}; "
        f"cost ${st['cost_usd']:.4f}"
    )


class JobProgress:
    """Call update(status) repeatedly; close() when done."""

    def __init__(self, console: Console | None = None, plain: bool | None = None):
        self.console = console or Console(stderr=True)
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self.started = time.monotonic()
        self._last_plain = 0.0
        self._last_line = ""
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def _bars(self, total: int) -> Progress:
        progress = Progress(
            TextColumn("{task.description:>10}"),
            BarColumn(),
            TextColumn("{task.completed:>7}/{task.total}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=False,
        )
        for name in ("done", "succeeded", "failed", "canceled"):
            self.tasks[name] = progress.add_task(name, total=total, info="")
        progress.start()
        return progress

    def update(self, st: dict[str, Any]) -> None:
        c = st["counts"]
        if self.plain:
            line = summary_line(st)
            now = time.monotonic()
            final = st["state"] in ("completed", "canceled")
            if line != self._last_line and (final or now - self._last_plain >= PLAIN_EVERY_S):
                print(line, file=sys.stderr, flush=True)
                self._last_plain, self._last_line = now, line
            return
        total = max(1, c["total"])
        if self.progress is None:
            self.progress = self._bars(total)
        terminal = c["succeeded"] + c["failed"] + c["canceled"] + c["rejected"]
        batches = st.get("batches") or []
        info = (
            f"{st['state']} · batches {len(batches)} · retried {st.get('retried', 0)} · "
            f"${st['cost_usd']:.4f}"
        )
        self.progress.update(self.tasks["done"], completed=terminal, total=total, info=info)
        for name in ("succeeded", "failed", "canceled"):
            self.progress.update(self.tasks[name], completed=c[name], total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
