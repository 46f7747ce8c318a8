"""Emulated batches: a lifecycle computed from the clock, and the store the endpoints share."""

from __future__ import annotations

import bisect
import hashlib
import math
from dataclasses import dataclass
from typing import Any

from batchline.emulator.outcomes import ERRORED, EXPIRED, SUCCEEDED, RequestRecord
from batchline.emulator.wire import rfc3339

EXPIRY_S = 24 * 3600
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
    cancel ending `canceled`."""

    def __init__(
        self,
        batch_id: str,
        records: list[RequestRecord],
        *,
        created_at: float,
        processing_s: float,
        digest: str,
    ) -> None:
        self.id = batch_id
        self.records = records
        self.created_at = created_at
        self.processing_s = processing_s
        self.digest = digest
        self.cancel_at: float | None = None
        self.canceling_s = 0.0
        self.retrieved = False
        self._final_counts: RequestCounts | None = None

    @property
    def request_count(self) -> int:
        return len(self.records)

    @property
    def ends_at(self) -> float:
        if self.cancel_at is not None:
            return self.cancel_at + self.canceling_s
        return self.created_at + self.processing_s

    def status(self, now: float) -> str:
        if now >= self.ends_at:
            return ENDED
        return CANCELING if self.cancel_at is not None else IN_PROGRESS

    def done_before_cancel(self) -> int:
        """How many requests (in order) kept their outcome; the rest are canceled."""
        n = len(self.records)
        if self.cancel_at is None or self.processing_s <= 0:
            return n
        done = math.floor((self.cancel_at - self.created_at) / self.processing_s * n)
        return max(0, min(n, done))

    def cancel(self, now: float, canceling_s: float) -> None:
        self.cancel_at = now
        self.canceling_s = canceling_s

    def counts(self, now: float) -> RequestCounts:
        if self.status(now) != ENDED:
            return RequestCounts(len(self.records), 0, 0, 0, 0)
        if self._final_counts is None:
            tally = [0, 0, 0]
            done = self.done_before_cancel()
            for record in self.records[:done]:
                tally[record.outcome] += 1
            self._final_counts = RequestCounts(
                processing=0,
                succeeded=tally[SUCCEEDED],
                errored=tally[ERRORED],
                canceled=len(self.records) - done,
                expired=tally[EXPIRED],
            )
        return self._final_counts

    def results_path(self) -> str:
        return f"/v1/messages/batches/{self.id}/results"

    def to_json(self, now: float) -> dict[str, Any]:
        ended = self.status(now) == ENDED
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status(now),
            "request_counts": self.counts(now).to_json(),
            "ended_at": rfc3339(self.ends_at) if ended else None,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.created_at + EXPIRY_S),
            "archived_at": None,
            "cancel_initiated_at": None if self.cancel_at is None else rfc3339(self.cancel_at),
            "results_url": self.results_path() if ended else None,
        }


def custom_ids_digest(records: list[RequestRecord]) -> str:
    """A short fingerprint of a batch's custom_ids: equal for a batch submitted twice."""
    digest = hashlib.blake2b(digest_size=8)
    for record in records:
        digest.update(record.custom_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()


class BatchStore:
    """Live batches by id, kept in id (creation) order, plus a record of every batch made."""

    def __init__(self) -> None:
        self._batches: dict[str, Batch] = {}
        self._ids: list[str] = []  # ascending, so newest last
        self._unended: set[str] = set()
        self._history: list[Batch] = []
        self._deleted: set[str] = set()

    def add(self, batch: Batch) -> None:
        self._batches[batch.id] = batch
        if self._ids and batch.id < self._ids[-1]:
            bisect.insort(self._ids, batch.id)
        else:
            self._ids.append(batch.id)
        self._unended.add(batch.id)
        self._history.append(batch)

    def get(self, batch_id: str) -> Batch | None:
        return self._batches.get(batch_id)

    def delete(self, batch_id: str) -> None:
        del self._batches[batch_id]
        index = bisect.bisect_left(self._ids, batch_id)
        del self._ids[index]
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
        ends = [self._batches[batch_id].ends_at for batch_id in self._unended]
        return max(0.0, min(ends) - now) if ends else 0.0

    def page(
        self, *, limit: int, after_id: str | None, before_id: str | None
    ) -> tuple[list[Batch], bool]:
        """A page newest first: after_id gives older batches, before_id newer ones."""
        ids = self._ids
        if before_id is not None:
            low = bisect.bisect_right(ids, before_id)
            chosen = ids[low : low + limit]
            has_more = low + limit < len(ids)
        else:
            high = bisect.bisect_left(ids, after_id) if after_id is not None else len(ids)
            chosen = ids[max(0, high - limit) : high]
            has_more = high - limit > 0
        return [self._batches[batch_id] for batch_id in reversed(chosen)], has_more

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
            }
            for batch in self._history
        ]
