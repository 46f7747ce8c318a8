"""Cutting a stream of requests into batches by request count and body size."""

from __future__ import annotations

from dataclasses import dataclass

# The create body is {"requests":[r1,r2,...]}: this much besides the requests and commas.
ENVELOPE_BYTES = len(b'{"requests":[]}')


@dataclass
class Chunker:
    """Tracks the open chunk and says when the next request must start a new one."""

    max_requests: int
    max_bytes: int
    number: int = 0
    count: int = 0
    body_bytes: int = ENVELOPE_BYTES

    def would_overflow(self, size: int) -> bool:
        """True when a request of `size` bytes does not fit in the open chunk."""
        if self.count == 0:
            return False
        extra = size + 1  # the comma before it
        return self.count >= self.max_requests or self.body_bytes + extra > self.max_bytes

    def add(self, size: int) -> bool:
        """Place a request; True when it opened a new chunk (the previous one is complete)."""
        opened = self.would_overflow(size)
        if opened:
            self.number += 1
            self.count = 0
            self.body_bytes = ENVELOPE_BYTES
        self.body_bytes += size + (1 if self.count else 0)
        self.count += 1
        return opened


def body_size(sizes: list[int]) -> int:
    """Exact size of a create body holding requests of these sizes."""
    return ENVELOPE_BYTES + sum(sizes) + max(len(sizes) - 1, 0)
