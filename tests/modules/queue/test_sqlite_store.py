"""The SQLite queue backend on its own: the states a message goes through, FIFO groups, recovery, group commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from iii.modules.queue.sqlite_store import SqliteQueueStore
from iii.modules.queue.store import NewMessage, QueueCounts

LEASE_MS = 60_000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteQueueStore]:
    opened = await SqliteQueueStore.open(tmp_path)
    yield opened
    await opened.close()


def message(message_id: str, queue: str = "q", group: str | None = None, data: bytes = b"{}") -> NewMessage:
    return NewMessage(message_id=message_id, queue=queue, function_id="f", data=data, group=group)


async def ids(store: SqliteQueueStore, queue: str = "q", limit: int = 100, *, fifo: bool = False) -> list[str]:
    claimed = await store.claim(queue, limit, 10**13, LEASE_MS, fifo=fifo)
    return [m.message_id for m in claimed]


async def test_messages_are_claimed_oldest_first_once_and_gone_when_acknowledged(store: SqliteQueueStore) -> None:
    await store.add([message(f"m{index}", data=b'{"n": %d}' % index) for index in range(5)])
    await store.add([message("m0")])  # a receipt already present is left as it is

    first = await store.claim("q", 2, 10**13, LEASE_MS)
    assert [m.message_id for m in first] == ["m0", "m1"]
    assert first[0].data == b'{"n": 0}' and first[0].attempts == 0
    assert await ids(store) == ["m2", "m3", "m4"]
    assert await ids(store) == []  # leased messages are not claimed again
    await store.ack("m0")
    assert (await store.queues())["q"] == QueueCounts(ready=0, leased=4, dead=0)
    assert await store.recover() == 4
    assert await ids(store) == ["m1", "m2", "m3", "m4"]  # the acknowledged one never comes back


async def test_retry_counts_an_attempt_and_waits_release_does_not(store: SqliteQueueStore) -> None:
    await store.add([message("a"), message("b")])
    assert await ids(store) == ["a", "b"]
    await store.retry("a", available_at_ms=5_000, error={"code": "x", "message": "failed"})
    await store.release("b")

    due_early = await store.claim("q", 10, 4_999, LEASE_MS)
    assert [(m.message_id, m.attempts) for m in due_early] == [("b", 0)]
    later = await store.claim("q", 10, 5_000, LEASE_MS)
    assert [(m.message_id, m.attempts, m.last_error) for m in later] == [("a", 1, {"code": "x", "message": "failed"})]


async def test_buried_messages_are_listed_redriven_and_discarded(store: SqliteQueueStore) -> None:
    await store.add([message("a"), message("b"), message("c"), message("other", queue="r")])
    await ids(store)
    for message_id in ("a", "b", "c"):
        await store.bury(message_id, {"code": "x", "message": f"{message_id} failed"})
    dead = await store.dead("q", 10)
    assert [(m.message_id, m.attempts) for m in dead] == [("a", 1), ("b", 1), ("c", 1)]
    assert dead[0].last_error == {"code": "x", "message": "a failed"}
    assert await store.redrive_message("q", "a") is True
    assert await store.redrive_message("r", "b") is False  # not a dead message of that queue
    assert await store.discard("q", "b") is True
    assert await store.discard("q", "b") is False
    assert (await store.queues())["q"] == QueueCounts(ready=1, leased=0, dead=1)
    assert await store.redrive("q") == 1
    claimed = await store.claim("q", 10, 10**13, LEASE_MS)
    assert [(m.message_id, m.attempts) for m in claimed] == [("a", 0), ("c", 0)]


async def test_fifo_claims_one_message_per_group_in_order_and_a_waiting_retry_holds_its_group(
    store: SqliteQueueStore,
) -> None:
    await store.add([message("a1", group="a"), message("b1", group="b"), message("a2", group="a")])
    await store.add([message("b2", group="b"), message("c1", group="c")])

    assert await ids(store, fifo=True) == ["a1", "b1", "c1"]
    assert await ids(store, fifo=True) == []  # every group has a message in flight
    await store.ack("a1")
    await store.retry("b1", available_at_ms=10**14, error={"code": "x", "message": "later"})
    await store.ack("c1")
    assert await ids(store, fifo=True) == ["a2"]  # b waits for b1's backoff; b2 does not overtake it
    await store.bury("a2", {"code": "x", "message": "dead"})
    assert await store.claim("q", 10, 10**14, LEASE_MS, fifo=True) != []  # b1 is due at last
    assert await ids(store, fifo=True) == []


async def test_reclaim_frees_only_expired_leases(store: SqliteQueueStore) -> None:
    await store.add([message("a"), message("b")])
    await store.claim("q", 1, 1_000, lease_ms=100)
    await store.claim("q", 1, 1_000, lease_ms=10_000)
    assert await store.reclaim(now_ms=1_100) == 1
    assert await ids(store) == ["a"]


async def test_messages_survive_reopening_and_concurrent_adds_share_commits(tmp_path: Path) -> None:
    store = await SqliteQueueStore.open(tmp_path)
    await asyncio.gather(*(store.add([message(f"m{index}")]) for index in range(300)))
    counters = store.counters()
    assert counters["writes"] == 300
    assert counters["commits"] < 100  # group commit: many adds per transaction and disk sync
    await store.close()

    reopened = await SqliteQueueStore.open(tmp_path)
    try:
        assert (await reopened.queues())["q"] == QueueCounts(ready=300, leased=0, dead=0)
    finally:
        await reopened.close()
