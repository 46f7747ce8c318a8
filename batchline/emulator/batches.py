"""Emulated batches: a lifecycle computed from the clock, and the store the endpoints share."""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from batchline.emulator.callers import DEFAULT_WORKSPACE
from batchline.emulator.config import DEFAULT_EXPIRY_SECONDS
from batchline.emulator.outcomes import ERRORED, EXPIRED, SUCCEEDED, RequestRecord
from batchline.emulator.wire import rfc3339

EXPIRY_S = DEFAULT_EXPIRY_SECONDS
# Slack for float error when asking whether request i of n was done by a given time.
_DONE_EPSILON = 1e-9
IN_PROGRESS = "in_progress"
CANCELING = "canceling"
ENDED = "ended"


@dataclass(frozen=True)
class RequestCounts:
    processing: int
    succeeded: int
    errored: int
    canceled: int
    expired: int

    def to_json(self) -> dict[str, int]:
        return {
            "processing": self.processing,
            "succeeded": self.succeeded,
            "errored": self.errored,
            "canceled": self.canceled,
            "expired": self.expired,
        }


class Batch:
    """One batch. Request i of n is done at created + (i+1)/n * processing_s; the batch ends
    when the last is done, or canceling_s after a cancel, with requests not done by the
    cancel ending `canceled`, and never after expires_at, with requests not done by then
    ending `expired`. A stalled batch ends only after a cancel, even past expires_at."""

    def __init__(
        self,
        batch_id: str,
        records: list[RequestRecord],
        *,
        created_at: float,
        processing_s: float,
        digest: str,
        expiry_s: float = EXPIRY_S,
        key_id: str = "",
        workspace: str = DEFAULT_WORKSPACE,
        stalled: bool = False,
    ) -> None:
        self.id = batch_id
        self.records = records
        self.created_at = created_at
        self.processing_s = processing_s
        self.digest = digest
        self.expiry_s = expiry_s
        self.key_id = key_id
        self.workspace = workspace
        self.stalled = stalled
        self.cancel_at: float | None = None
        self.canceling_s = 0.0
        self.retrieved = False
        # What clients did to it, for the admin history.
        self.cancel_requested = False
        self.retrieves = 0
        self.results_downloads = 0
        # The line order of its last "random" download, so the next one can differ.
        self.last_random_order: int | None = None
        self._final_counts: RequestCounts | None = None

    @property
    def request_count(self) -> int:
        return len(self.records)

    @property
    def expires_at(self) -> float:
        return self.created_at + self.expiry_s

    @property
    def ends_at(self) -> float:
        if self.cancel_at is not None:
            end = self.cancel_at + self.canceling_s
        elif self.stalled:
            return math.inf
        else:
            end = self.created_at + self.processing_s
        # An overdue batch is canceled after expires_at: it ends when that cancel is done.
        return end if self.stalled else min(end, self.expires_at)

    def status(self, now: float) -> str:
        if now >= self.ends_at:
            return ENDED
        return CANCELING if self.cancel_at is not None else IN_PROGRESS

    def _done_within(self, elapsed_s: float) -> int:
        n = len(self.records)
        if self.processing_s <= 0:
            return n
        done = math.floor(elapsed_s / self.processing_s * n + _DONE_EPSILON)
        return max(0, min(n, done))

    def done_count(self) -> int:
        """How many requests (in order) kept their outcome; the rest are canceled (after a
        cancel) or expired (cut off by expires_at)."""
        if self.cancel_at is not None:
            return self._done_within(self.cancel_at - self.created_at)
        if self.stalled:
            return len(self.records)
        return self._done_within(self.expiry_s)

    def cut_short(self) -> str:
        """What the requests past done_count() end as: "canceled" or "expired"."""
        return "canceled" if self.cancel_at is not None else "expired"

    def cancel(self, now: float, canceling_s: float) -> None:
        self.cancel_at = now
        self.canceling_s = canceling_s

    def counts(self, now: float) -> RequestCounts:
        if self.status(now) != ENDED:
            return RequestCounts(len(self.records), 0, 0, 0, 0)
        if self._final_counts is None:
            tally = [0, 0, 0]
            done = self.done_count()
            for record in self.records[:done]:
                tally[record.outcome] += 1
            rest = len(self.records) - done
            canceled = rest if self.cut_short() == "canceled" else 0
            self._final_counts = RequestCounts(
                processing=0,
                succeeded=tally[SUCCEEDED],
                errored=tally[ERRORED],
                canceled=canceled,
                expired=tally[EXPIRED] + rest - canceled,
            )
        return self._final_counts

    def results_path(self) -> str:
        return f"/v1/messages/batches/{self.id}/results"

    def to_json(self, now: float, results_base_url: str = "") -> dict[str, Any]:
        """The MessageBatch; results_url is the path alone unless a base URL is given."""
        ended = self.status(now) == ENDED
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status(now),
            "request_counts": self.counts(now).to_json(),
            "ended_at": rfc3339(self.ends_at) if ended else None,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "archived_at": None,
            "cancel_initiated_at": None if self.cancel_at is None else rfc3339(self.cancel_at),
            "results_url": results_base_url + self.results_path() if ended else None,
        }


def custom_ids_digest(records: list[RequestRecord]) -> str:
    """A short fingerprint of a batch's custom_ids: equal for a batch submitted twice."""
    digest = hashlib.blake2b(digest_size=8)
    for record in records:
        digest.update(record.custom_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()


class BatchStore:
    """Live batches by id, kept in id (creation) order, overall and per workspace, plus a
    record of every batch made."""

    def __init__(self) -> None:
        self._batches: dict[str, Batch] = {}
        self._ids: list[str] = []  # ascending, so newest last
        self._ids_by_workspace: dict[str, list[str]] = {}
        self._unended: set[str] = set()
        self._history: list[Batch] = []
        self._deleted: set[str] = set()

    def add(self, batch: Batch) -> None:
        self._batches[batch.id] = batch
        _insert_sorted(self._ids, batch.id)
        _insert_sorted(self._ids_by_workspace.setdefault(batch.workspace, []), batch.id)
        self._unended.add(batch.id)
        self._history.append(batch)

    def get(self, batch_id: str) -> Batch | None:
        return self._batches.get(batch_id)

    def delete(self, batch_id: str) -> None:
        batch = self._batches.pop(batch_id)
        _remove_sorted(self._ids, batch_id)
        _remove_sorted(self._ids_by_workspace[batch.workspace], batch_id)
        self._unended.discard(batch_id)
        self._deleted.add(batch_id)

    def queued_requests(self, now: float) -> int:
        """Requests in batches that have not ended: what the queue limit counts."""
        total = 0
        for batch_id in list(self._unended):
            batch = self._batches[batch_id]
            if batch.status(now) == ENDED:
                self._unended.discard(batch_id)
            else:
                total += batch.request_count
        return total

    def seconds_until_next_end(self, now: float) -> float:
        """Until the next batch ends on its own (0 when none will: stalled ones never do)."""
        ends = [self._batches[batch_id].ends_at for batch_id in self._unended]
        finite = [end for end in ends if end != math.inf]
        return max(0.0, min(finite) - now) if finite else 0.0

    def page(
        self,
        *,
        limit: int,
        after_id: str | None,
        before_id: str | None,
        workspace: str | None = None,
        hidden: Collection[str] = (),
    ) -> tuple[list[Batch], bool]:
        """A page newest first: after_id gives older batches, before_id newer ones.
        Only `workspace`'s batches (every one when None), none of those `hidden`."""
        ids = self._ids if workspace is None else self._ids_by_workspace.get(workspace, [])
        if before_id is not None:
            low = bisect.bisect_right(ids, before_id)
            walk: Iterator[str] = (ids[i] for i in range(low, len(ids)))
        else:
            high = bisect.bisect_left(ids, after_id) if after_id is not None else len(ids)
            walk = (ids[i] for i in range(high - 1, -1, -1))
        chosen: list[str] = []
        has_more = False
        for batch_id in walk:
            if batch_id in hidden:
                continue
            if len(chosen) == limit:
                has_more = True
                break
            chosen.append(batch_id)
        if before_id is not None:
            chosen.reverse()
        return [self._batches[batch_id] for batch_id in chosen], has_more

    def history(self, now: float) -> list[dict[str, Any]]:
        """Every batch created since the last reset, deleted ones included."""
        return [
            {
                "id": batch.id,
                "request_count": batch.request_count,
                "processing_status": batch.status(now),
                "created_at": rfc3339(batch.created_at),
                "deleted": batch.id in self._deleted,
                "custom_ids_digest": batch.digest,
                "key_id": batch.key_id,
                "workspace": batch.workspace,
                "cancel_requested": batch.cancel_requested,
                "retrieves": batch.retrieves,
                "results_downloads": batch.results_downloads,
            }
            for batch in self._history
        ]


def _insert_sorted(ids: list[str], batch_id: str) -> None:
    if ids and batch_id < ids[-1]:
        bisect.insort(ids, batch_id)
    else:
        ids.append(batch_id)


def _remove_sorted(ids: list[str], batch_id: str) -> None:
    del ids[bisect.bisect_left(ids, batch_id)]
