"""Many cheap deadlines, checked in batches.

Every pending invocation has a deadline, and most complete long before it. A timer handle per call would
cost a heap entry that outlives the call; here a deadline is an entry in a per-tick bucket, removed in
O(1) when the call completes, and :meth:`Deadlines.pop_expired` collects the overdue keys of all buckets
up to now. Resolution is one tick; no entry expires early.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """A set of keys, each due at a time; times are any monotonic clock in seconds."""

    __slots__ = ("_buckets", "_due_tick", "_tick_s", "_ticks")

    def __init__(self, tick_s: float = 0.1) -> None:
        if tick_s <= 0:
            raise ValueError("tick_s must be positive")
        self._tick_s = tick_s
        self._buckets: dict[int, set[K]] = {}
        self._due_tick: dict[K, int] = {}
        self._ticks: list[int] = []  # heap of ticks that had a bucket; stale entries are skipped

    def __len__(self) -> int:
        return len(self._due_tick)

    def add(self, key: K, due: float) -> None:
        """Make ``key`` due at ``due`` (replacing an earlier deadline for the same key)."""
        self.discard(key)
        tick = math.ceil(due / self._tick_s)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = set()
            heapq.heappush(self._ticks, tick)
        bucket.add(key)
        self._due_tick[key] = tick

    def discard(self, key: K) -> None:
        """Forget ``key``; does nothing if it has no deadline."""
        tick = self._due_tick.pop(key, None)
        if tick is None:
            return
        bucket = self._buckets[tick]
        bucket.discard(key)
        if not bucket:
            del self._buckets[tick]

    def pop_expired(self, now: float) -> list[K]:
        """Remove and return every key whose deadline is at or before ``now``."""
        limit = math.floor(now / self._tick_s)
        expired: list[K] = []
        while self._ticks and self._ticks[0] <= limit:
            tick = heapq.heappop(self._ticks)
            for key in self._buckets.pop(tick, ()):
                del self._due_tick[key]
                expired.append(key)
        return expired
