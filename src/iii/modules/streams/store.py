"""Stream items on the state module's backends: ``stream_name > group_id > item_id`` -> a JSON value.

A stream group is one scope of a :class:`~iii.modules.state.store.StateStore` (SQLite in a file of its own,
``streams.sqlite3``, or Redis under a prefix of its own, ``iii:streams:``), so the items get the same
durability, atomic read-modify-write and group commit as state's keys without a second pair of backends.
The scope is the JSON array ``["<stream_name>","<group_id>"]``: any two names give a distinct scope, and the
scopes of one stream share the prefix ``["<stream_name>",``, which is how a stream's groups are found.

Listing a stream's groups reads the list of all non-empty scopes (the backends keep it), so it costs in the
number of groups of all streams; fine for the hundreds of groups a stream usually has, and noted here in
case it is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from iii.modules.state.redis_store import RedisStore
from iii.modules.state.sqlite_store import SqliteStore
from iii.modules.state.store import Applied, Change, Entry, R, StateStore, StoreError, decode, encode
from iii.modules.streams.settings import StreamsSettings

__all__ = ["Applied", "Entry", "GroupAddress", "StoreError", "StreamStore", "decode", "encode", "open_stream_store"]

FILE_NAME = "streams.sqlite3"


@dataclass(frozen=True, slots=True)
class GroupAddress:
    """A stream group: the unit items are listed by (and, later, subscribed to)."""

    stream_name: str
    group_id: str


def _scope(group: GroupAddress) -> str:
    return encode([group.stream_name, group.group_id]).decode()


def _stream_prefix(stream_name: str) -> str:
    return encode([stream_name]).decode()[:-1] + ","


def _group(scope: str) -> GroupAddress | None:
    """The group a scope names; None for a scope that is not one (never written by this module)."""
    try:
        names = decode(scope.encode())
    except msgspec.DecodeError:
        return None
    if isinstance(names, list) and len(names) == 2 and all(isinstance(name, str) for name in names):
        return GroupAddress(names[0], names[1])
    return None


class StreamStore:
    """Stream items over a state backend; see the module docstring. Methods raise StoreError when it fails."""

    def __init__(self, backend: StateStore) -> None:
        self._backend = backend
        self.kind = backend.kind

    async def get(self, group: GroupAddress, item_id: str) -> Entry | None:
        """The item's stored JSON, None if absent."""
        return await self._backend.get(_scope(group), item_id)

    async def put(self, group: GroupAddress, item_id: str, value: bytes) -> Applied[None]:
        """Store ``value`` as the item, whatever was there (``old``: what it replaced)."""
        return await self._backend.put(_scope(group), item_id, value)

    async def mutate(self, group: GroupAddress, item_id: str, change: Change[R]) -> Applied[R]:
        """Run ``change`` atomically against the item (see :class:`~iii.modules.state.store.StateStore`)."""
        return await self._backend.mutate(_scope(group), item_id, change)

    async def items(self, group: GroupAddress) -> list[bytes]:
        """The group's items, in item id order."""
        return await self._backend.values(_scope(group))

    async def first_items(self, group: GroupAddress, limit: int) -> tuple[int, list[tuple[str, bytes]]]:
        """The group's number of items and its first ``limit`` (item id, stored JSON) pairs, in item id order."""
        return await self._backend.first_entries(_scope(group), limit)

    async def groups(self, stream_name: str) -> list[str]:
        """The ids of the stream's groups that hold at least one item, sorted."""
        prefix = _stream_prefix(stream_name)
        found = [_group(scope) for scope in await self._backend.scopes() if scope.startswith(prefix)]
        return sorted(group.group_id for group in found if group is not None and group.stream_name == stream_name)

    async def streams(self) -> dict[str, list[str]]:
        """Every stream that holds an item -> its groups' ids, both sorted."""
        streams: dict[str, list[str]] = {}
        for scope in await self._backend.scopes():
            group = _group(scope)
            if group is not None:
                streams.setdefault(group.stream_name, []).append(group.group_id)
        return {name: sorted(streams[name]) for name in sorted(streams)}

    async def group_counts(self) -> dict[GroupAddress, int]:
        """The number of items of each non-empty group."""
        counts: dict[GroupAddress, int] = {}
        for scope, count in (await self._backend.scope_counts()).items():
            group = _group(scope)
            if group is not None:
                counts[group] = count
        return counts

    def counters(self) -> Mapping[str, int]:
        return self._backend.counters()

    def describe(self) -> str:
        return self._backend.describe()

    async def close(self) -> None:
        await self._backend.close()


async def open_stream_store(settings: StreamsSettings) -> StreamStore:
    """The backend ``settings`` choose, opened."""
    backend: Any
    if settings.resolved_backend == "redis":
        assert settings.redis_url is not None  # StreamsSettings checks it
        backend = await RedisStore.open(settings.redis_url, prefix=settings.redis_key_prefix)
    else:
        backend = await SqliteStore.open(
            settings.data_dir,
            synchronous=settings.sqlite_synchronous,
            batch_max_writes=settings.sqlite_batch_max_writes,
            file_name=FILE_NAME,
            name="streams",
        )
    return StreamStore(backend)
