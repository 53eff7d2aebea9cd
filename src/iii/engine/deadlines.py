"""Many cheap deadlines for keys that share a few timeout values.

Every pending invocation has a deadline, and most complete long before it. Calls with the same timeout
expire in the order they started, so each distinct timeout gets a FIFO queue: adding and removing a key
are O(1) dictionary operations, and :meth:`Deadlines.pop_expired` only looks at the head of each queue.
Timeouts are rounded up to a 100 ms grid, which bounds the number of queues and lets a key expire at most
that much late, never early.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

_GRID_S: Final = 0.1


class Deadlines(Generic[K]):
    """A set of keys, each due at ``start + timeout``; times are any monotonic clock in seconds."""

    __slots__ = ("_queues",)

    def __init__(self) -> None:
        self._queues: dict[float, OrderedDict[K, float]] = {}

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    @staticmethod
    def slot(timeout_s: float) -> float:
        """The queue a timeout belongs to (pass it back to :meth:`discard`)."""
        return math.ceil(timeout_s / _GRID_S) * _GRID_S

    def add(self, key: K, start: float, timeout_s: float) -> float:
        """Make ``key`` due ``timeout_s`` after ``start``; returns its slot. Keys must be unique."""
        slot = self.slot(timeout_s)
        queue = self._queues.get(slot)
        if queue is None:
            queue = self._queues[slot] = OrderedDict()
        queue[key] = start + slot
        return slot

    def discard(self, key: K, slot: float) -> None:
        """Forget ``key`` (added with ``slot``); does nothing if it is not there."""
        queue = self._queues.get(slot)
        if queue is not None and queue.pop(key, None) is not None and not queue:
            del self._queues[slot]

    def pop_expired(self, now: float) -> list[K]:
        """Remove and return every key whose deadline is at or before ``now``, oldest first per queue."""
        expired: list[K] = []
        for slot in list(self._queues):
            queue = self._queues[slot]
            while queue:
                key = next(iter(queue))
                if queue[key] > now:
                    break
                del queue[key]
                expired.append(key)
            if not queue:
                del self._queues[slot]
        return expired
