"""Peak resident memory and CPU time of the processes of a run (psutil sampling plus the
kernel's high-water mark) and Redis memory (INFO used_memory) sampled during it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from batchline.devstack import Worker

SAMPLE_INTERVAL_S = 0.2


def peak_rss_bytes(pid: int) -> int | None:
    """The process's high-water mark of resident memory (Linux VmHWM), if readable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_s(proc: psutil.Process) -> float | None:
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system)


@dataclass
class ProcessPeak:
    """One process's largest resident set seen, and the CPU time it used while watched."""

    worker: str
    role: str  # "main" (the celery worker itself), "pool" (a prefork child), or a server
    pid: int
    peak_rss_bytes: int = 0
    cpu_start_s: float | None = None
    cpu_end_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        cpu = None
        if self.cpu_start_s is not None and self.cpu_end_s is not None:
            cpu = round(self.cpu_end_s - self.cpu_start_s, 2)
        return {
            "worker": self.worker,
            "role": self.role,
            "pid": self.pid,
            "peak_rss_bytes": self.peak_rss_bytes,
            "cpu_s": cpu,
        }


@dataclass
class RssSampler:
    """Samples the RSS (and CPU time) of every process of the given workers, and of other
    named processes (Redis, the emulator), in a background thread."""

    workers: list[Worker]
    others: dict[str, int] = field(default_factory=dict)  # name -> pid
    interval_s: float = SAMPLE_INTERVAL_S
    peaks: dict[int, ProcessPeak] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _watched(self) -> list[tuple[str, str, psutil.Process]]:
        out = []
        for w in self.workers:
            if w.proc is None:
                continue
            for proc in _tree(w.proc.pid):
                out.append((w.name, "main" if proc.pid == w.proc.pid else "pool", proc))
        for name, pid in self.others.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                out.append((name, "server", psutil.Process(pid)))
        return out

    def sample(self) -> None:
        for name, role, proc in self._watched():
            try:
                rss = int(proc.memory_info().rss)
            except psutil.Error:
                continue
            peak = self.peaks.get(proc.pid)
            if peak is None:
                peak = self.peaks[proc.pid] = ProcessPeak(name, role, proc.pid)
                peak.cpu_start_s = _cpu_s(proc)
            cpu = _cpu_s(proc)
            if cpu is not None:
                peak.cpu_end_s = cpu
            hwm = peak_rss_bytes(proc.pid) or 0
            peak.peak_rss_bytes = max(peak.peak_rss_bytes, rss, hwm)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def result(self) -> list[dict[str, Any]]:
        return [p.as_dict() for p in sorted(self.peaks.values(), key=lambda p: (p.worker, p.pid))]

    def max_bytes(self, worker_prefix: str = "") -> int:
        return max(
            (
                p.peak_rss_bytes
                for p in self.peaks.values()
                if p.role != "server" and p.worker.startswith(worker_prefix)
            ),
            default=0,
        )

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds used while watched, summed per worker (or server) name; the workers
        `name.a@` and `name.b@` count together as `name`."""
        out: dict[str, float] = {}
        for p in self.peaks.values():
            d = p.as_dict()["cpu_s"]
            if d is not None:
                key = p.worker.split("@")[0].split(".")[0]
                out[key] = round(out.get(key, 0.0) + d, 2)
        return out


@dataclass
class RedisMemorySampler:
    """Samples Redis used_memory with a phase label from `phase()` in a background thread
    (and, given `cpu`, the CPU seconds Redis has used, with the time of each sample)."""

    used_memory: Callable[[], int]
    phase: Callable[[], str]
    probe: Callable[[], None] | None = None  # anything else to look at on each tick
    interval_s: float = 0.05
    cpu: Callable[[], float] | None = None
    samples: list[tuple[float, str, int]] = field(default_factory=list)
    cpu_samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                phase = self.phase()
                used = self.used_memory()
                # The phase again: a sample counts only if the phase held on both sides.
                if self.phase() == phase:
                    self.samples.append((time.time(), phase, used))
                if self.probe is not None:
                    self.probe()
                if self.cpu is not None:
                    self.cpu_samples.append((time.time(), self.cpu()))
            except redis.RedisError:
                pass  # a missed sample is not a failed run
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RedisMemorySampler:
        self._thread = threading.Thread(target=self._run, name="redis-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.cpu is not None:  # a last sample: after whatever the caller waited for
            with contextlib.suppress(redis.RedisError):
                self.cpu_samples.append((time.time(), self.cpu()))

    def cpu_between(self, start: float | None, end: float | None) -> float | None:
        """Redis CPU seconds from the last sample at or before `start` to the first at or
        after `end` (None when the samples do not reach both sides)."""
        if start is None or end is None:
            return None
        before = [cpu for t, cpu in self.cpu_samples if t <= start]
        after = [cpu for t, cpu in self.cpu_samples if t >= end]
        if not before or not after:
            return None
        return after[0] - before[-1]

    def median(self, phase: str) -> int | None:
        values = sorted(used for _, p, used in self.samples if p == phase)
        return values[len(values) // 2] if values else None

    def peak(self, phase: str) -> int | None:
        values = [used for _, p, used in self.samples if p == phase]
        return max(values) if values else None
