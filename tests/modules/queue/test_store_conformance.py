"""What every queue backend promises (iii.modules.queue.store), checked on each backend in BACKENDS (a backend
joins with one line there; the tests of several engines sharing one backend run on those in SHARED).

Times are the dispatcher's clock (``now_ms``), here a made-up one starting at ``T``: no test waits for time to pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from iii.modules.queue.redis_store import RedisQueueStore
from iii.modules.queue.sqlite_store import SqliteQueueStore
from iii.modules.queue.store import NewMessage, QueueCounts, QueueStore, StoredMessage, StoreError, topic_queue
from tests.redis_server import RedisServer


class LazyRedis:
    """A real Redis for the backends that use one, started when a test first asks for its URL."""

    def __init__(self) -> None:
        self._server: RedisServer | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            self._server = RedisServer()
            self._server.start()
        return self._server.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


Opener = Callable[[Path, LazyRedis], Awaitable[QueueStore]]

BACKENDS: dict[str, Opener] = {
    "redis": lambda tmp_path, redis: RedisQueueStore.open(redis.url, consumer="engine-1"),
    "sqlite": lambda tmp_path, redis: SqliteQueueStore.open(tmp_path),
}
"""How each backend opens a store; opening it again with the same arguments is the same engine restarted."""

SHARED: dict[str, Callable[[Path, LazyRedis, str], Awaitable[QueueStore]]] = {
    "redis": lambda tmp_path, redis, engine: RedisQueueStore.open(redis.url, consumer=engine),
}
"""Backends that several engines share at once, each opened under its own engine name."""

T = 1_000_000
"""The made-up clock's start."""
LEASE = 30_000


@pytest.fixture
def redis() -> Iterator[LazyRedis]:
    server = LazyRedis()
    yield server
    server.stop()


@pytest.fixture(params=sorted(BACKENDS))
async def opener(
    request: pytest.FixtureRequest, tmp_path: Path, redis: LazyRedis
) -> AsyncIterator[Callable[[], Awaitable[QueueStore]]]:
    """``await opener()``: open this test's backend (again: the same engine restarted); every store opened is
    closed after the test."""
    opened: list[QueueStore] = []

    async def open_store() -> QueueStore:
        store = await BACKENDS[request.param](tmp_path, redis)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        await store.close()


@pytest.fixture
async def store(opener: Callable[[], Awaitable[QueueStore]]) -> QueueStore:
    return await opener()


@pytest.fixture(params=sorted(SHARED))
async def engines(
    request: pytest.FixtureRequest, tmp_path: Path, redis: LazyRedis
) -> AsyncIterator[tuple[QueueStore, QueueStore]]:
    """Two engines sharing one backend."""
    first = await SHARED[request.param](tmp_path, redis, "engine-1")
    second = await SHARED[request.param](tmp_path, redis, "engine-2")
    yield first, second
    await first.close()
    await second.close()


def new(message_id: str, queue: str = "q", **fields: Any) -> NewMessage:
    return NewMessage(
        message_id=message_id, queue=queue, function_id="fn", data=f'{{"n":"{message_id}"}}'.encode(), **fields
    )


def ids(messages: list[StoredMessage]) -> list[str]:
    return [message.message_id for message in messages]


async def claim_ids(
    store: QueueStore, queue: str = "q", limit: int = 100, now_ms: int = T, **options: Any
) -> list[str]:
    return ids(await store.claim(queue, limit, now_ms, LEASE, **options))


async def test_messages_are_claimed_oldest_first_as_they_were_added(store: QueueStore) -> None:
    before = int(time.time() * 1000)
    await store.add([new("m1", traceparent="00-abc-def-01", baggage="k=v"), new("m2")])
    await store.add([new("m3")])
    after = int(time.time() * 1000)
    first = await store.claim("q", 2, T, LEASE)
    assert ids(first) == ["m1", "m2"]
    message = first[0]
    assert (message.queue, message.function_id, message.data, message.group) == ("q", "fn", b'{"n":"m1"}', None)
    assert (message.attempts, message.available_at_ms, message.last_error) == (0, 0, None)
    assert (message.traceparent, message.baggage) == ("00-abc-def-01", "k=v")
    assert (first[1].traceparent, first[1].baggage) == (None, None)
    assert before <= message.enqueued_at_ms <= after
    assert await claim_ids(store) == ["m3"]
    assert await claim_ids(store) == []  # all leased


async def test_a_message_is_claimed_once_its_due_time_has_come(store: QueueStore) -> None:
    await store.add([new("later", available_at_ms=T + 5_000), new("now", available_at_ms=T)])
    assert await claim_ids(store, now_ms=T + 4_999) == ["now"]
    assert await claim_ids(store, now_ms=T + 5_000) == ["later"]


async def test_claim_takes_at_most_limit_and_only_from_its_queue(store: QueueStore) -> None:
    await store.add([new(f"a{index}", queue="a") for index in range(5)] + [new("b0", queue="b")])
    assert await claim_ids(store, "a", limit=3) == ["a0", "a1", "a2"]
    assert await claim_ids(store, "a", limit=3) == ["a3", "a4"]
    assert await claim_ids(store, "b") == ["b0"]
    assert await claim_ids(store, "nothing") == []


async def test_queue_names_are_taken_literally(store: QueueStore) -> None:
    names = ["a:b", "a", topic_queue("orders", "fn:x"), "日本 🔑", "a:b:c"]
    await store.add([new(f"m{index}", queue=name, group="g:1") for index, name in enumerate(names)])
    for index, name in enumerate(names):
        assert await claim_ids(store, name, fifo=True) == [f"m{index}"]
    assert await store.queues() == {name: QueueCounts(ready=0, leased=1, dead=0) for name in names}
    odd = NewMessage("-1:x", "q", "fn:日本", '{"text":"日本 -:1\\u0000"}'.encode(), group="", baggage="")
    await store.add([odd])
    [claimed] = await store.claim("q", 1, T, LEASE, fifo=True)
    assert (claimed.message_id, claimed.function_id, claimed.data) == (odd.message_id, odd.function_id, odd.data)
    assert (claimed.group, claimed.baggage, claimed.traceparent) == ("", "", None)


async def test_a_message_id_added_twice_is_kept_as_first_added(store: QueueStore) -> None:
    await store.add([new("m1"), NewMessage("m1", "q", "fn", b'"second"')])
    await store.add([NewMessage("m1", "q", "fn", b'"third"'), new("m2")])
    claimed = await store.claim("q", 10, T, LEASE)
    assert ids(claimed) == ["m1", "m2"]
    assert claimed[0].data == b'{"n":"m1"}'
    await store.add([new("m1")])  # leased: still present
    assert await claim_ids(store) == []
    assert await store.queues() == {"q": QueueCounts(ready=0, leased=2, dead=0)}


async def test_counts_follow_the_messages_and_empty_queues_are_not_listed(store: QueueStore) -> None:
    assert await store.queues() == {}
    await store.add([new("m1"), new("m2"), new("m3", available_at_ms=T + 60_000), new("x", queue="other")])
    assert await store.queues() == {"q": QueueCounts(3, 0, 0), "other": QueueCounts(1, 0, 0)}
    await store.claim("q", 2, T, LEASE)
    assert (await store.queues())["q"] == QueueCounts(ready=1, leased=2, dead=0)
    await store.bury("m1", {"message": "boom"})
    await store.ack("m2")
    assert (await store.queues())["q"] == QueueCounts(ready=1, leased=0, dead=1)
    await store.discard("q", "m1")
    await store.claim("other", 1, T, LEASE)
    await store.ack("x")
    assert await store.queues() == {"q": QueueCounts(ready=1, leased=0, dead=0)}


async def test_an_acknowledged_message_is_never_claimed_again(opener: Callable[[], Awaitable[QueueStore]]) -> None:
    store = await opener()
    await store.add([new("m1"), new("m2")])
    await store.claim("q", 10, T, LEASE)
    await store.ack("m1")
    assert await store.reclaim(T + 10 * LEASE) == 1  # m2's lease ran out; m1 is gone
    assert await claim_ids(store, now_ms=T + 10 * LEASE) == ["m2"]
    await store.ack("m2")
    await store.close()
    restarted = await opener()
    assert await restarted.recover() == 0
    assert await restarted.reclaim(T + 100 * LEASE) == 0
    assert await claim_ids(restarted, now_ms=T + 100 * LEASE) == []
    assert await restarted.queues() == {}
    await restarted.add([new("m3")])
    await restarted.ack("m3")  # not leased (its delivery was not claimed here): gone all the same
    await restarted.ack("unknown")
    assert await claim_ids(restarted) == []


async def test_an_ack_after_the_lease_ran_out_still_removes_the_message(store: QueueStore) -> None:
    """The delivery succeeded late: the message is not delivered again, whoever leased it since."""
    await store.add([new("m1"), new("m2")])
    await store.claim("q", 10, T, LEASE)
    assert await store.reclaim(T + LEASE + 1) == 2
    await store.ack("m1")  # ready again, not yet claimed
    assert await claim_ids(store, now_ms=T + LEASE + 1) == ["m2"]
    await store.ack("m2")  # leased again
    assert await store.queues() == {}


async def test_retry_makes_a_message_ready_at_its_time_with_one_attempt_more(store: QueueStore) -> None:
    await store.add([new("m1")])
    await store.claim("q", 1, T, LEASE)
    await store.retry("m1", T + 1_000, {"code": "invocation_failed", "message": "first"})
    assert await store.queues() == {"q": QueueCounts(ready=1, leased=0, dead=0)}
    assert await claim_ids(store, now_ms=T + 999) == []
    [again] = await store.claim("q", 1, T + 1_000, LEASE)
    assert (again.message_id, again.attempts, again.available_at_ms) == ("m1", 1, T + 1_000)
    assert again.last_error == {"code": "invocation_failed", "message": "first"}
    await store.retry("m1", T + 3_000, {"message": "second", "nested": {"list": [1, 2.5, None]}})
    [third] = await store.claim("q", 1, T + 3_000, LEASE)
    assert third.attempts == 2
    assert third.last_error == {"message": "second", "nested": {"list": [1, 2.5, None]}}


async def test_release_gives_a_message_back_at_once_without_counting_an_attempt(store: QueueStore) -> None:
    await store.add([new("m1")])
    await store.claim("q", 1, T, LEASE)
    await store.retry("m1", T + 100, {"message": "failed"})
    await store.claim("q", 1, T + 100, LEASE)
    await store.release("m1")
    [again] = await store.claim("q", 1, T + 100, LEASE)
    assert (again.message_id, again.attempts) == ("m1", 1)
    await store.bury("m1", {"message": "last"})
    [dead] = await store.dead("q", 10)
    assert dead.attempts == 2  # the retried delivery and the buried one; the released one does not count


async def test_settling_a_message_that_is_not_leased_changes_nothing(store: QueueStore) -> None:
    await store.add([new("m1"), new("m2")])
    await store.retry("m1", T + 1_000, {"message": "not leased"})
    await store.bury("m1", {"message": "not leased"})
    await store.release("m1")
    for operation in (store.release("ghost"), store.retry("ghost", T, {}), store.bury("ghost", {})):
        await operation
    assert await store.queues() == {"q": QueueCounts(ready=2, leased=0, dead=0)}
    [first, _] = await store.claim("q", 10, T, LEASE)
    assert (first.message_id, first.attempts, first.last_error) == ("m1", 0, None)


async def test_bury_moves_a_message_to_its_queues_dead_letters(store: QueueStore) -> None:
    await store.add([new("m1"), new("m2"), new("m3"), new("x", queue="other")])
    await store.claim("q", 10, T, LEASE)
    await store.claim("other", 10, T, LEASE)
    await store.bury("m2", {"message": "two"})
    await store.bury("m1", {"message": "one"})
    await store.bury("x", {"message": "other"})
    dead = await store.dead("q", 10)
    assert ids(dead) == ["m1", "m2"]  # oldest first
    assert [message.last_error for message in dead] == [{"message": "one"}, {"message": "two"}]
    assert dead[0].data == b'{"n":"m1"}'
    assert ids(await store.dead("q", 1)) == ["m1"]
    assert ids(await store.dead("other", 10)) == ["x"]
    assert await store.dead("nothing", 10) == []
    assert await store.reclaim(T + 10 * LEASE) == 1  # only m3 was still leased
    assert await claim_ids(store, now_ms=T + 10 * LEASE) == ["m3"]


async def test_redrive_brings_every_dead_message_back_with_attempts_reset(store: QueueStore) -> None:
    await store.add([new(f"m{index}") for index in range(3)] + [new("x", queue="other")])
    await store.claim("q", 10, T, LEASE)
    await store.claim("other", 10, T, LEASE)
    for message_id in ("m0", "m1", "x"):
        await store.retry(message_id, T, {"message": "once"})
    await store.claim("q", 10, T, LEASE)
    await store.claim("other", 10, T, LEASE)
    for message_id in ("m0", "m1", "x"):
        await store.bury(message_id, {"message": "twice"})
    assert await store.redrive("q") == 2
    assert await store.redrive("q") == 0
    assert await store.dead("q", 10) == []
    assert ids(await store.dead("other", 10)) == ["x"]
    assert await store.queues() == {"q": QueueCounts(2, 1, 0), "other": QueueCounts(0, 0, 1)}
    again = await store.claim("q", 10, T + 1, LEASE)
    assert sorted(ids(again)) == ["m0", "m1"]
    assert [message.attempts for message in again] == [0, 0]


async def test_redrive_message_and_discard_touch_only_a_dead_message_of_the_queue(store: QueueStore) -> None:
    await store.add([new("d1"), new("d2"), new("d3"), new("leased"), new("ready"), new("x", queue="other")])
    await store.claim("q", 4, T, LEASE)
    await store.claim("other", 1, T, LEASE)
    for message_id in ("d1", "d2", "d3", "x"):
        await store.bury(message_id, {"message": "dead"})
    for message_id in ("leased", "ready", "x", "ghost"):
        assert await store.redrive_message("q", message_id) is False
        assert await store.discard("q", message_id) is False
    assert await store.queues() == {"q": QueueCounts(1, 1, 3), "other": QueueCounts(0, 0, 1)}

    assert await store.redrive_message("q", "d2") is True
    assert await store.redrive_message("q", "d2") is False  # no longer dead
    assert ids(await store.dead("q", 10)) == ["d1", "d3"]
    assert await store.discard("q", "d3") is True
    assert await store.discard("q", "d3") is False
    assert ids(await store.dead("q", 10)) == ["d1"]
    assert await store.queues() == {"q": QueueCounts(2, 1, 1), "other": QueueCounts(0, 0, 1)}
    assert sorted(await claim_ids(store)) == ["d2", "ready"]
    await store.add([new("d3")])  # a discarded message is gone: its id can be used again
    assert await claim_ids(store) == ["d3"]


async def test_reclaim_makes_messages_whose_lease_ran_out_ready_again(store: QueueStore) -> None:
    await store.add([new("short"), new("long"), new("other", queue="o")])
    await store.claim("q", 1, T, 1_000)
    await store.claim("q", 1, T, 60_000)
    await store.claim("o", 1, T, 1_000)
    assert await store.reclaim(T + 500) == 0
    assert await claim_ids(store, now_ms=T + 500) == []
    assert await store.reclaim(T + 2_000) == 2
    assert await store.reclaim(T + 2_000) == 0
    assert await store.queues() == {"q": QueueCounts(1, 1, 0), "o": QueueCounts(1, 0, 0)}
    [again] = await store.claim("q", 10, T + 2_000, 1_000)
    assert again.message_id == "short"
    assert await claim_ids(store, "o", now_ms=T + 2_000) == ["other"]
    assert await store.reclaim(T + 2_500) == 0  # the new lease runs from the new claim
    assert await store.reclaim(T + 61_000) == 3


async def test_recover_gives_back_what_the_engine_had_leased_before_it_stopped(
    opener: Callable[[], Awaitable[QueueStore]],
) -> None:
    store = await opener()
    await store.add([new(f"m{index}") for index in range(5)] + [new("x", queue="other")])
    await store.claim("q", 3, T, LEASE)
    await store.claim("other", 1, T, LEASE)
    await store.ack("m0")
    await store.close()  # as if killed mid-delivery: m1, m2 and x stay leased
    restarted = await opener()
    assert await restarted.queues() == {"q": QueueCounts(2, 2, 0), "other": QueueCounts(0, 1, 0)}
    assert await restarted.recover() == 3
    assert await restarted.recover() == 0
    assert await restarted.queues() == {"q": QueueCounts(4, 0, 0), "other": QueueCounts(1, 0, 0)}
    again = await restarted.claim("q", 10, T, LEASE)  # at once: the lease has not run out
    assert sorted(ids(again)) == ["m1", "m2", "m3", "m4"]
    assert [message.attempts for message in again] == [0, 0, 0, 0]
    assert await claim_ids(restarted, "other") == ["x"]


async def test_fifo_leases_one_message_per_group_in_order(store: QueueStore) -> None:
    await store.add([new("a1", group="a"), new("a2", group="a"), new("b1", group="b"), new("a3", group="a")])
    await store.add([new("b2", group="b"), new("c1", group="c")])
    assert await claim_ids(store, fifo=True) == ["a1", "b1", "c1"]
    assert await claim_ids(store, fifo=True) == []  # every group has a leased message
    await store.ack("b1")
    assert await claim_ids(store, fifo=True) == ["b2"]
    await store.ack("a1")
    await store.ack("c1")
    assert await claim_ids(store, fifo=True) == ["a2"]
    await store.ack("a2")
    await store.ack("b2")
    assert await claim_ids(store, fifo=True) == ["a3"]
    await store.ack("a3")
    assert await store.queues() == {}


async def test_fifo_a_failing_message_holds_back_only_its_own_group(store: QueueStore) -> None:
    await store.add([new("a1", group="a"), new("a2", group="a"), new("b1", group="b"), new("b2", group="b")])
    assert await claim_ids(store, fifo=True) == ["a1", "b1"]
    await store.retry("a1", T + 1_000, {"message": "failed"})
    await store.ack("b1")
    assert await claim_ids(store, fifo=True) == ["b2"]  # a2 waits behind a1's retry
    await store.ack("b2")
    assert await claim_ids(store, now_ms=T + 999, fifo=True) == []
    [retried] = await store.claim("q", 10, T + 1_000, LEASE, fifo=True)
    assert (retried.message_id, retried.attempts) == ("a1", 1)
    await store.release("a1")  # its worker vanished: still first of its group
    assert await claim_ids(store, now_ms=T + 1_000, fifo=True) == ["a1"]
    await store.bury("a1", {"message": "last"})  # dead: the group goes on
    assert await claim_ids(store, now_ms=T + 1_000, fifo=True) == ["a2"]
    assert await store.reclaim(T + 1_001 + LEASE) == 1
    assert await claim_ids(store, now_ms=T + 1_001 + LEASE, fifo=True) == ["a2"]  # lease ran out: still first


async def test_fifo_groups_of_a_redriven_message_keep_one_at_a_time(store: QueueStore) -> None:
    await store.add([new("a1", group="a"), new("a2", group="a")])
    await store.claim("q", 10, T, LEASE, fifo=True)
    await store.bury("a1", {"message": "dead"})
    assert await claim_ids(store, fifo=True) == ["a2"]
    assert await store.redrive_message("q", "a1") is True
    assert await claim_ids(store, fifo=True) == []  # a2 is leased: a1 waits
    await store.ack("a2")
    assert await claim_ids(store, fifo=True) == ["a1"]


async def test_fifo_ack_of_a_message_whose_lease_ran_out_lets_the_group_go_on(store: QueueStore) -> None:
    await store.add([new("a1", group="a"), new("a2", group="a")])
    await store.claim("q", 10, T, LEASE, fifo=True)
    await store.reclaim(T + LEASE + 1)
    await store.ack("a1")  # the late result of the first delivery
    assert await claim_ids(store, now_ms=T + LEASE + 1, fifo=True) == ["a2"]


async def test_concurrent_adds_and_claims_lose_nothing_and_lease_nothing_twice(store: QueueStore) -> None:
    batches = [[new(f"m{batch}-{index}") for index in range(20)] for batch in range(20)]
    await asyncio.gather(*(store.add(batch) for batch in batches))
    claimed = await asyncio.gather(*(store.claim("q", 7, T, LEASE) for _ in range(60)))
    every = [message_id for messages in claimed for message_id in ids(messages)]
    assert sorted(every) == sorted(message.message_id for batch in batches for message in batch)
    for batch in batches:  # each add kept its order
        positions = [every.index(message.message_id) for message in batch]
        assert positions == sorted(positions)


async def test_two_engines_never_lease_one_message_at_once(engines: tuple[QueueStore, QueueStore]) -> None:
    first, second = engines
    await first.add([new(f"m{index}") for index in range(100)])
    await second.add([new(f"g{index}", queue="fifo", group=f"g{index % 3}") for index in range(30)])
    leased: list[str] = []
    fifo_leased: list[str] = []
    for _ in range(3):
        claims = [store.claim("q", 9, T, LEASE) for store in (first, second) for _ in range(10)]
        for messages in await asyncio.gather(*claims):
            leased += ids(messages)
    for _ in range(10):  # one message per group leased at once, across both engines; acknowledged, the next
        claims = [store.claim("fifo", 10, T, LEASE, fifo=True) for store in (first, second)]
        now = [message for messages in await asyncio.gather(*claims) for message in messages]
        assert len({message.group for message in now}) == len(now) <= 3
        fifo_leased += ids(now)
        await asyncio.gather(*(first.ack(message.message_id) for message in now))
    assert sorted(leased + fifo_leased) == sorted(
        [f"m{index}" for index in range(100)] + [f"g{index}" for index in range(30)]
    )
    for group in range(3):  # each group in order
        order = [message_id for message_id in fifo_leased if int(message_id[1:]) % 3 == group]
        assert order == [f"g{index}" for index in range(group, 30, 3)]


async def test_one_engine_reclaims_what_another_leased_when_the_lease_ran_out(
    engines: tuple[QueueStore, QueueStore],
) -> None:
    first, second = engines
    await first.add([new("m1"), new("m2")])
    assert await claim_ids(first) == ["m1", "m2"]
    assert await claim_ids(second) == []
    assert await second.reclaim(T + LEASE + 1) == 2
    assert await claim_ids(second, now_ms=T + LEASE + 1) == ["m1", "m2"]
    await first.ack("m1")  # the first engine's late result
    await second.ack("m1")
    await second.ack("m2")
    assert await first.queues() == {}


async def test_a_closed_store_refuses_with_store_error(store: QueueStore) -> None:
    await store.add([new("m1")])
    await store.close()
    with pytest.raises(StoreError):
        await store.add([new("m2")])
    with pytest.raises(StoreError):
        await store.claim("q", 1, T, LEASE)
    with pytest.raises(StoreError):
        await store.queues()
    await store.close()  # closing again is harmless
