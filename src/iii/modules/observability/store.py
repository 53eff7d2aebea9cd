"""A ring buffer bounded by count and by bytes: the newest records are kept, the oldest dropped and counted."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from typing import Final, Generic, TypeVar

T = TypeVar("T")

MEMBER_BYTES: Final = 56
"""What a member of a JSON object or array costs as Python objects beyond its JSON text (its slot in a dict or
list, the str or int object's header, a key's own object), about; see :func:`record_size`."""


def record_size(encoded: bytes) -> int:
    """An estimate of the memory a record's Python objects hold (a dict of dicts, lists, strs and ints), from its
    JSON ``encoded``: the JSON's bytes plus :data:`MEMBER_BYTES` per member and element (counted as its ``:`` and
    ``,``; those inside strings count too, which only overstates).

    A record's JSON is several times smaller than its objects (an OTLP log record from the official Python SDK:
    about 550 bytes of JSON, 2.4 KB of objects), so that the JSON's size alone would let a ring bounded at 8 MiB
    hold some 30 MiB. This estimate is within about -10% / +50% of what ``tracemalloc`` measures for the SDKs'
    logs, spans and metrics (more when records share a resource), at the cost of two ``bytes.count``.
    """
    return len(encoded) + MEMBER_BYTES * (encoded.count(b":") + encoded.count(b","))


class Ring(Generic[T]):
    """At most ``max_count`` records of at most ``max_bytes`` together (each added with its size, an estimate of
    what it holds in memory: :func:`record_size`). Adding past either bound drops the oldest records until both
    hold again; :attr:`dropped` counts them. A record larger than ``max_bytes`` on its own is not kept (counted as
    dropped)."""

    def __init__(self, max_count: int, max_bytes: int) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError("a ring needs max_count >= 1 and max_bytes >= 1")
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._items: deque[tuple[T, int]] = deque()
        self.bytes = 0
        """The sizes of the records held, summed."""
        self.dropped = 0
        """Records dropped to keep the bounds, since the start."""
        self.added = 0
        """Records added, since the start."""
        self.kept = 0
        """Records kept (added within the bytes bound), since the start: the newest held record is the
        ``kept``-th, so a reader that saw ``kept == n`` finds the newer ones with :meth:`since`."""

    def add(self, item: T, size: int) -> None:
        """Keep ``item`` (of ``size`` bytes) as the newest record, dropping the oldest ones past the bounds."""
        self.added += 1
        if size > self.max_bytes:
            self.dropped += 1
            return
        self._items.append((item, size))
        self.kept += 1
        self.bytes += size
        while len(self._items) > self.max_count or self.bytes > self.max_bytes:
            _, old_size = self._items.popleft()
            self.bytes -= old_size
            self.dropped += 1

    def clear(self) -> None:
        """Forget every record (not counted as dropped)."""
        self._items.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        """The records, oldest first."""
        return (item for item, _ in self._items)

    def since(self, kept: int) -> list[T]:
        """The records kept after the ``kept``-th (those still held), oldest first."""
        newer = min(len(self._items), max(0, self.kept - kept))
        return [item for item, _ in itertools.islice(self._items, len(self._items) - newer, None)]

    def newest_first(self) -> Iterator[T]:
        """The records, newest first."""
        return (item for item, _ in reversed(self._items))
