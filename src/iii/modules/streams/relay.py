"""Stream changes between engines over Redis pub/sub, for subscribers connected to another engine.

Each engine publishes the encoded wrapper message of every change and event it makes on the channel
``<redis_key_prefix>changes``, prefixed with its instance id (32 hex digits), and subscribes to that channel:
another engine's messages go to its own subscribers, its own (already delivered when made) are skipped. The
``stream`` triggers fire only where the change was made, so nothing is relayed to them.

Publishing never makes a write wait: messages are queued (at most ``MAX_WAITING``; beyond that, while Redis is
slow or away, they are dropped, logged and counted) and sent in order by one task. Pub/sub delivers at most
once: a subscriber of another engine misses the changes made while Redis was away, as it would while its own
connection was down (a client that reconnects gets a fresh sync).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("iii.modules.streams")

MAX_WAITING: Final = 65536
"""Messages waiting to be published, at most (the oldest are kept: a subscriber sees a prefix, then a gap)."""
RETRY_S: Final = 1.0
_ID_LENGTH: Final = 32


class RedisRelay:
    """One engine's end of the channel (see the module docstring)."""

    def __init__(self, url: str, channel: str, deliver: Callable[[bytes], None]) -> None:
        self.instance_id = secrets.token_hex(_ID_LENGTH // 2).encode()
        self._url = url
        self._channel = channel
        self._deliver = deliver
        self._redis: Any = None
        self._waiting: asyncio.Queue[bytes] = asyncio.Queue(MAX_WAITING)
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        self._closing = False
        self.published = 0
        self.received = 0
        self.lost = 0
        """Messages not published: the queue was full."""

    async def start(self) -> None:
        """Connect and subscribe (returns once subscribed, or after a first failure: it keeps trying)."""
        self._redis = aioredis.from_url(self._url)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._publish())]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 5.0)

    def publish(self, message: bytes) -> None:
        """Queue an encoded wrapper message for the other engines (never waits)."""
        try:
            self._waiting.put_nowait(self.instance_id + message)
        except asyncio.QueueFull:
            self.lost += 1
            if self.lost == 1 or self.lost % 10000 == 0:
                log.warning("stream: Redis is not keeping up; %d changes not sent to other engines", self.lost)

    async def _publish(self) -> None:
        while not self._closing:
            message = await self._waiting.get()
            while not self._closing:
                try:
                    await self._redis.publish(self._channel, message)
                    self.published += 1
                    break
                except (RedisError, OSError) as error:
                    log.warning("stream: cannot publish changes on Redis (%s); retrying", error)
                    await asyncio.sleep(RETRY_S)

    async def _listen(self) -> None:
        while not self._closing:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        data: bytes = message["data"]
                        if data[:_ID_LENGTH] == self.instance_id:
                            continue
                        self.received += 1
                        self._deliver(data[_ID_LENGTH:])
            except (RedisError, OSError) as error:
                self._subscribed.set()  # start() waits no longer
                log.warning("stream: lost other engines' changes on Redis (%s); subscribing again", error)
                await asyncio.sleep(RETRY_S)

    async def close(self) -> None:
        self._closing = True
        # redis-py can swallow a cancellation that lands inside a command (the task then goes on): the flag ends
        # the loops, and a task still running is cancelled again.
        for _ in range(3):
            running = [task for task in self._tasks if not task.done()]
            if not running:
                break
            for task in running:
                task.cancel()
            await asyncio.wait(running, timeout=1.0)
        if self._redis is not None:
            await self._redis.aclose()
