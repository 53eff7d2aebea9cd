"""Where publications travel: in this process (:class:`LocalBus`) or through Redis pub/sub (:class:`RedisBus`).

A bus calls ``deliver(topic, data)`` once for each message on a topic it watches, on the event loop. With
Redis, a publication goes only to Redis, and this engine delivers what its subscription connection receives
back, like every other engine on that Redis: each engine hears each message once, the publishing one too.
Channel names and payloads are the reference engine's (the topic, and the JSON of ``data``), so with an empty
prefix engines of both kinds on one Redis share topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from iii.modules.redis_pipeline import Pipeliner
from iii.modules.redis_urls import redacted

log = logging.getLogger("iii.modules.pubsub")

Deliver = Callable[[str, Any], None]

RECONNECT_INITIAL_S = 0.05
RECONNECT_MAX_S = 2.0
CONNECT_TIMEOUT_S = 5.0


class BusError(Exception):
    """A publication could not be handed to the bus (Redis unreachable)."""


class Bus(Protocol):
    async def start(self) -> None:
        """Connect; raises BusError when the backend cannot be reached."""

    async def publish(self, topic: str, data: Any) -> None:
        """Send ``data`` to every engine's subscribers of ``topic``; raises BusError."""

    def watch(self, topic: str) -> None:
        """Start hearing ``topic`` (this engine has a subscriber for it)."""

    def unwatch(self, topic: str) -> None:
        """Stop hearing ``topic``."""

    async def wait_subscribed(self, topic: str, session: int = 1) -> None:
        """Return once messages on ``topic`` reach this engine (in subscription session ``session`` or later)."""

    def is_subscribed(self, topic: str) -> bool:
        """Whether messages published on ``topic`` now reach this bus (its subscription is confirmed)."""

    def describe(self) -> dict[str, Any]:
        """The bus's state for the console."""

    async def close(self) -> None: ...


class LocalBus:
    """Publications stay in this engine: ``publish`` delivers at once."""

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def start(self) -> None:
        pass

    async def publish(self, topic: str, data: Any) -> None:
        self._deliver(topic, data)

    def watch(self, topic: str) -> None:
        pass

    def unwatch(self, topic: str) -> None:
        pass

    async def wait_subscribed(self, topic: str, session: int = 1) -> None:
        pass

    def is_subscribed(self, topic: str) -> bool:
        return True  # in process, a watched topic is heard from the moment it is watched

    def describe(self) -> dict[str, Any]:
        return {"backend": "local"}

    async def close(self) -> None:
        pass


class RedisBus:
    """Redis pub/sub: one connection publishes, one subscription connection hears the watched topics.

    The subscription connection is re-made (with backoff, and every watched topic subscribed again) whenever
    it breaks; messages published meanwhile do not reach this engine, as pub/sub promises nothing more.
    """

    def __init__(self, url: str, deliver: Deliver, *, channel_prefix: str = "") -> None:
        self._url = url
        self._deliver = deliver
        self._prefix = channel_prefix
        self._client: aioredis.Redis | None = None
        self._publisher: Pipeliner | None = None
        self._listener: aioredis.Redis | None = None
        self._wanted: set[str] = set()
        self._changed = asyncio.Event()
        """Set when the watched topics change; the running session reconciles its subscriptions."""
        self._confirmed: set[str] = set()
        """Topics Redis confirmed for the current session."""
        self._heard_back = False
        """Redis confirmed a subscription in the current session."""
        self.sessions = 0
        """Subscription connections made so far (1 after the first, 2 after one reconnect, ...)."""
        self._state = asyncio.Condition()
        self._runner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._client = aioredis.Redis.from_url(self._url, socket_connect_timeout=CONNECT_TIMEOUT_S)
        self._publisher = Pipeliner(self._client)  # concurrent publications go to Redis together
        # The subscription connection is re-made by _run alone: redis-py's own retries would re-subscribe
        # behind our back and hide the loss.
        self._listener = aioredis.Redis.from_url(
            self._url,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            await self._client.ping()
        except (RedisError, OSError) as error:
            await self.close()
            raise BusError(f"pubsub: cannot reach Redis at {redacted(self._url)}: {error}") from error
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="pubsub:redis")

    async def publish(self, topic: str, data: Any) -> None:
        assert self._publisher is not None, "publish before start"
        try:
            await self._publisher.execute("PUBLISH", self._prefix + topic, msgspec.json.encode(data))
        except (RedisError, OSError) as error:
            raise BusError(f"Redis at {redacted(self._url)} did not take the message: {error}") from error

    def watch(self, topic: str) -> None:
        self._wanted.add(topic)
        self._changed.set()

    def unwatch(self, topic: str) -> None:
        self._wanted.discard(topic)
        self._changed.set()

    async def wait_subscribed(self, topic: str, session: int = 1) -> None:
        async with self._state:
            await self._state.wait_for(lambda: self.sessions >= session and topic in self._confirmed)

    def is_subscribed(self, topic: str) -> bool:
        return topic in self._confirmed

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "redis",
            "redis_url": redacted(self._url),
            "subscribed": sorted(self._confirmed),
            "sessions": self.sessions,
        }

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._publisher is not None:
            await self._publisher.close()
        for client in (self._client, self._listener):
            if client is not None:
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()
        self._client = self._listener = None

    # --- the subscription connection --------------------------------------------------------------------

    async def _run(self) -> None:
        delay = RECONNECT_INITIAL_S
        while True:
            if not self._wanted:
                self._changed.clear()
                await self._changed.wait()
                continue
            assert self._listener is not None
            pubsub = self._listener.pubsub()
            self.sessions += 1
            self._heard_back = False
            try:
                await self._session(pubsub)
                continue  # nothing watched any more
            except Exception as error:
                # Back off only while Redis does not answer at all; a session that worked starts over quickly.
                delay = RECONNECT_INITIAL_S if self._heard_back else min(delay * 2, RECONNECT_MAX_S)
                if isinstance(error, RedisError | OSError):
                    log.warning("pubsub: lost the Redis subscription connection (%s); again in %.2f s", error, delay)
                else:
                    log.exception("pubsub: the Redis subscription failed; again in %.2f s", delay)
            finally:
                await self._set_confirmed(None)
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)

    async def _session(self, pubsub: aioredis.client.PubSub) -> None:
        """Subscribe and read until the connection breaks (raises) or nothing is watched (returns)."""
        subscribed: set[str] = set()
        await self._reconcile(pubsub, subscribed)
        loop = asyncio.get_running_loop()
        reconciler = loop.create_task(self._keep_reconciled(pubsub, subscribed))
        reader = loop.create_task(self._read(pubsub))
        try:
            done, _ = await asyncio.wait({reconciler, reader}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # the first error, if any
        finally:
            for task in (reconciler, reader):
                task.cancel()
            await asyncio.gather(reconciler, reader, return_exceptions=True)

    async def _keep_reconciled(self, pubsub: aioredis.client.PubSub, subscribed: set[str]) -> None:
        while subscribed or self._wanted:
            await self._changed.wait()
            await self._reconcile(pubsub, subscribed)
        # Nothing watched any more: end the session (the connection is dropped until a topic is watched).

    async def _reconcile(self, pubsub: aioredis.client.PubSub, subscribed: set[str]) -> None:
        self._changed.clear()
        wanted = set(self._wanted)
        added, removed = wanted - subscribed, subscribed - wanted
        if added:
            await pubsub.subscribe(*(self._prefix + topic for topic in added))
            subscribed |= added
        if removed:
            await pubsub.unsubscribe(*(self._prefix + topic for topic in removed))
            subscribed -= removed

    async def _read(self, pubsub: aioredis.client.PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is None:
                continue
            kind = message["type"]
            channel = message["channel"]
            name = channel.decode() if isinstance(channel, bytes) else str(channel)
            topic = name[len(self._prefix) :]
            if kind == "message":
                self._on_message(topic, message["data"])
            elif kind == "subscribe":
                await self._set_confirmed(topic, True)
            elif kind == "unsubscribe":
                await self._set_confirmed(topic, False)

    def _on_message(self, topic: str, payload: Any) -> None:
        try:
            data = msgspec.json.decode(payload)
        except (msgspec.DecodeError, TypeError) as error:
            log.warning("pubsub: dropped a message on topic %r that is not JSON: %s", topic, error)
            return
        self._deliver(topic, data)

    async def _set_confirmed(self, topic: str | None, live: bool = False) -> None:
        async with self._state:
            if topic is None:
                self._confirmed.clear()
            elif live:
                self._confirmed.add(topic)
                self._heard_back = True
            else:
                self._confirmed.discard(topic)
            self._state.notify_all()
