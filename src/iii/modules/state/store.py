"""The one interface of the state backends (SQLite, Redis), and the JSON codec they store values with.

A backend keeps, per ``(scope, key)``, the value's JSON bytes and a version (1 on creation, +1 on each
write). It knows nothing of update ops or limits: a write is either a :meth:`StateStore.put` of new bytes, or
a :data:`Change`, a pure function from the current :class:`Entry` (None: absent) to the bytes to store
(None: delete) and an outcome of the caller's.
:meth:`StateStore.mutate` runs the change against the current entry atomically: no other write to the
key comes between the read it is given and the write it returns. A change may be run more than once (the
Redis backend retries it when another writer got there first), so it must not have side effects; an
exception it raises fails that write alone and nothing is written.

Every write has been made durable by the backend when ``mutate`` returns (see each backend for what that
means); reads return committed data only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgspec

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored value: its JSON bytes and its version (>= 1)."""

    value: bytes
    version: int


Change = Callable[[Entry | None], tuple[bytes | None, R]]
"""``change(current) -> (bytes to store or None to delete, outcome)``; see the module docstring."""


@dataclass(frozen=True, slots=True)
class Applied(Generic[R]):
    """What :meth:`StateStore.mutate` did: the entry it replaced, the key's version now, the change's outcome."""

    old: Entry | None
    version: int
    """The key's version after the write; 0 when the key is absent afterwards."""
    outcome: R


class VersionConflict(Exception):
    """:meth:`StateStore.put` found the key at another version than expected; nothing was written."""

    def __init__(self, actual: int) -> None:
        super().__init__(f"the key is at version {actual}")
        self.actual = actual
        """The key's version (0: absent)."""


class StoreError(Exception):
    """The backend failed (I/O error, Redis unreachable, closed); the write may not have happened."""


class StateStore(Protocol):
    """A state backend. All methods run on the module's event loop."""

    kind: str
    """``sqlite`` or ``redis``."""

    async def get(self, scope: str, key: str) -> Entry | None:
        """The committed entry at ``(scope, key)``, None if absent."""

    async def mutate(self, scope: str, key: str, change: Change[R]) -> Applied[R]:
        """Run ``change`` atomically against the current entry and store its result durably."""

    async def put(self, scope: str, key: str, value: bytes, expected_version: int | None = None) -> Applied[None]:
        """Store ``value`` whatever is there (a write that needs no read first: one round trip to Redis).

        With ``expected_version`` (0: absent) the key must be at that version, else :class:`VersionConflict`.
        """

    async def values(self, scope: str) -> list[bytes]:
        """The values of ``scope`` in key order."""

    async def first_entries(self, scope: str, limit: int) -> tuple[int, list[tuple[str, bytes]]]:
        """The number of keys of ``scope`` and its first ``limit`` (key, value) pairs in key order (a bounded
        look at a scope of any size, for the console)."""

    async def scopes(self) -> list[str]:
        """The scopes that hold at least one key, sorted."""

    async def scope_counts(self) -> dict[str, int]:
        """The number of keys of each non-empty scope."""

    def counters(self) -> Mapping[str, int]:
        """The backend's own counters for metrics (e.g. commits and writes, retries)."""

    def describe(self) -> str:
        """Where the data lives, for logs and the console (a path, or Redis' address without credentials)."""

    async def close(self) -> None:
        """Finish the writes already submitted, then release the backend; later calls raise StoreError."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def encode(value: Any) -> bytes:
    """A value as compact UTF-8 JSON (no ``\\u`` escapes). Raises ``TypeError`` / ``ValueError`` if not JSON."""
    return _encoder.encode(value)


def decode(data: bytes) -> Any:
    """Stored JSON bytes back to a value."""
    return _decoder.decode(data)
