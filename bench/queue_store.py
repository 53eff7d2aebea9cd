"""The queue backend alone (no engine): messages/s through ``add`` then ``claim`` + ``ack`` on Redis.

A fresh ``redis-server`` on a free loopback port, without persistence (as the tests run it). Producers: 64
concurrent ``add`` calls of one message each, until ``--messages`` are added. Then consumers: 4 concurrent loops
that each claim up to 64 messages and acknowledge each of them (concurrent ``ack`` calls), until every message is
acknowledged. Then both at once (producers and consumers running together): the rate a queue sustains.

Run alone: ``python bench/queue_store.py [--messages N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _common import redis_server

from iii.modules.queue.redis_store import RedisQueueStore
from iii.modules.queue.store import NewMessage, QueueStore

PRODUCERS = 64
CONSUMERS = 4
BATCH = 64
LEASE_MS = 60_000


async def produce(store: QueueStore, prefix: str, messages: int) -> None:
    next_index = 0

    async def producer() -> None:
        nonlocal next_index
        while next_index < messages:
            index = next_index
            next_index += 1
            await store.add([NewMessage(f"{prefix}{index}", "bench", "fn", b'{"n":1}')])

    await asyncio.gather(*(producer() for _ in range(PRODUCERS)))


async def consume(store: QueueStore, messages: int) -> None:
    done = 0

    async def consumer() -> None:
        nonlocal done
        while done < messages:
            claimed = await store.claim("bench", BATCH, int(time.time() * 1000), LEASE_MS)
            if not claimed:
                await asyncio.sleep(0.001)  # producers are behind
                continue
            await asyncio.gather(*(store.ack(message.message_id) for message in claimed))
            done += len(claimed)

    await asyncio.gather(*(consumer() for _ in range(CONSUMERS)))


async def run(messages: int) -> None:
    with redis_server() as redis:
        store = await RedisQueueStore.open(redis.url, consumer="bench")
        try:
            started = time.perf_counter()
            await produce(store, "a", messages)
            added = time.perf_counter()
            await consume(store, messages)
            consumed = time.perf_counter()
            await asyncio.gather(produce(store, "b", messages), consume(store, messages))
            both = time.perf_counter()
        finally:
            await store.close()
    print(f"redis, {messages} messages:")
    print(f"  add ({PRODUCERS} in flight):            {messages / (added - started):>9,.0f} messages/s")
    print(f"  claim {BATCH} + ack ({CONSUMERS} consumers):    {messages / (consumed - added):>9,.0f} messages/s")
    print(f"  add, claim and ack at once:        {messages / (both - consumed):>9,.0f} messages/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    asyncio.run(run(parser.parse_args().messages))


if __name__ == "__main__":
    main()
