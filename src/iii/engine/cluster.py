"""Several engines as one system: membership and the function registry on Redis, calls over links (issue 15).

What Redis holds (prefix ``iii:cluster:``):

* ``engine:{id}``: each engine's address (``--advertise-url``), with a short TTL that the engine refreshes every
  :attr:`Cluster.heartbeat_s`: an engine that dies drops out within :attr:`Cluster.ttl_s`;
* ``functions``: a hash of function id → the engine serving it. The first engine to claim an id keeps it
  (``HSETNX``), as the first worker keeps a function within one engine; an engine removes only its own entries;
* ``changes``: a pub/sub channel announcing each claim and removal. Pub/sub delivers at most once, so an engine
  reloads the whole registry whenever its subscription (re)starts.

Every engine keeps a full copy: a function served by another engine is registered here with the
:class:`~iii.engine.links.EngineLink` to that engine as its owner, so no call touches Redis, and calls within an
engine never leave it. With Redis down, local calls and existing links go on; the cluster converges when Redis is
back (the reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from iii.engine.links import EngineLink, LinkError

if TYPE_CHECKING:
    from iii.engine.core import Core

log = logging.getLogger("iii.engine.cluster")

PREFIX: Final = "iii:cluster:"
_RELEASE: Final = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
"""Remove a function's entry only if this engine holds it."""


class Cluster:
    """This engine's part in a cluster (see the module docstring)."""

    def __init__(
        self,
        core: Core,
        redis_url: str,
        engine_id: str,
        advertise_url: str,
        *,
        token: str | None = None,
        heartbeat_s: float = 1.0,
        ttl_s: float = 3.0,
    ) -> None:
        self.core = core
        self.engine_id = engine_id
        self.advertise_url = advertise_url
        self.token = token
        self.heartbeat_s = heartbeat_s
        self.ttl_s = ttl_s
        self._redis = aioredis.from_url(redis_url)
        self._links: dict[str, EngineLink] = {}
        """Open links by engine id."""
        self._remote: dict[str, str] = {}
        """Functions of other engines registered here: function id → engine id."""
        self._claimed: set[str] = set()
        """This engine's functions it holds in the registry."""
        self._tasks: list[asyncio.Task[None]] = []
        self._sync_needed = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._heartbeat_once()
        self.core.functions.change_listeners.append(self._sync_needed.set)
        self._sync_needed.set()
        self._tasks = [
            asyncio.ensure_future(self._heartbeat()),
            asyncio.ensure_future(self._listen()),
            asyncio.ensure_future(self._publish_local()),
        ]
        log.info("cluster: engine %s at %s joined", self.engine_id, self.advertise_url)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(RedisError, OSError):
            for function_id in list(self._claimed):
                await self._redis.eval(_RELEASE, 1, PREFIX + "functions", function_id, self.engine_id)
            await self._redis.delete(self._engine_key(self.engine_id))
        for link in list(self._links.values()):
            link.close()
        await self._redis.aclose()

    # --- this engine's functions --------------------------------------------------------------------------

    def _served_here(self) -> set[str]:
        """The functions a worker of this engine serves (not those it reaches over links)."""
        return {
            entry.function_id
            for entry in self.core.functions.entries()
            if entry.owner is not None and not isinstance(entry.owner, EngineLink)
        }

    async def _publish_local(self) -> None:
        """Claim what this engine serves, release what it no longer does: on every change of its functions."""
        while True:
            await self._sync_needed.wait()
            self._sync_needed.clear()
            served = self._served_here()
            try:
                for function_id in sorted(served - self._claimed):
                    if await self._redis.hsetnx(PREFIX + "functions", function_id, self.engine_id):
                        await self._announce("add", function_id)
                    self._claimed.add(function_id)
                for function_id in sorted(self._claimed - served):
                    if await self._redis.eval(_RELEASE, 1, PREFIX + "functions", function_id, self.engine_id):
                        await self._announce("remove", function_id)
                    self._claimed.discard(function_id)
            except (RedisError, OSError) as error:
                log.warning("cluster: the registry could not be updated (%s); retrying", error)
                await asyncio.sleep(self.heartbeat_s)
                self._sync_needed.set()

    async def _announce(self, op: str, function_id: str) -> None:
        change = {"op": op, "function_id": function_id, "engine_id": self.engine_id}
        await self._redis.publish(PREFIX + "changes", json.dumps(change))

    # --- membership ----------------------------------------------------------------------------------------

    def _engine_key(self, engine_id: str) -> str:
        return f"{PREFIX}engine:{engine_id}"

    async def _heartbeat_once(self) -> None:
        await self._redis.set(self._engine_key(self.engine_id), self.advertise_url, px=int(self.ttl_s * 1000))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._heartbeat_once()
            except (RedisError, OSError) as error:
                log.warning("cluster: heartbeat failed (%s)", error)

    # --- the other engines' functions ----------------------------------------------------------------------

    async def _listen(self) -> None:
        """Follow the announcements; reload the whole registry whenever the subscription (re)starts."""
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(PREFIX + "changes")
                    await self._reload()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self._apply(json.loads(message["data"]))
            except (RedisError, OSError) as error:
                log.warning("cluster: lost the registry's announcements (%s); reloading when Redis is back", error)
                await asyncio.sleep(self.heartbeat_s)

    async def _reload(self) -> None:
        registry = await self._redis.hgetall(PREFIX + "functions")
        wanted = {_text(key): _text(value) for key, value in registry.items()}
        for function_id, engine_id in list(self._remote.items()):
            if wanted.get(function_id) != engine_id:
                self._forget(function_id)
        for function_id, engine_id in wanted.items():
            if engine_id != self.engine_id:
                await self._learn(function_id, engine_id)

    async def _apply(self, change: dict[str, Any]) -> None:
        function_id, engine_id = str(change.get("function_id")), str(change.get("engine_id"))
        if engine_id == self.engine_id:
            return
        if change.get("op") == "add":
            await self._learn(function_id, engine_id)
        elif self._remote.get(function_id) == engine_id:
            self._forget(function_id)

    async def _learn(self, function_id: str, engine_id: str) -> None:
        if self._remote.get(function_id) == engine_id:
            return
        link = await self._link(engine_id)
        if link is None:
            return
        if self.core.add_remote_function(function_id, link):
            self._remote[function_id] = engine_id

    def _forget(self, function_id: str) -> None:
        engine_id = self._remote.pop(function_id, None)
        link = self._links.get(engine_id) if engine_id is not None else None
        if link is not None:
            self.core.remove_remote_function(function_id, link)

    async def _link(self, engine_id: str) -> EngineLink | None:
        """The open link to ``engine_id``, made if needed; None when that engine is gone or unreachable."""
        link = self._links.get(engine_id)
        if link is not None and link.alive:
            return link
        address = await self._redis.get(self._engine_key(engine_id))
        if address is None:
            return None  # its key expired: the engine is gone
        link = EngineLink(self.core, _text(address), token=self.token)
        try:
            await link.open()
        except LinkError as error:
            log.warning("cluster: engine %s unreachable: %s", engine_id, error)
            return None
        self._links[engine_id] = link
        self._tasks.append(asyncio.ensure_future(self._forget_when_closed(engine_id, link)))
        return link

    async def _forget_when_closed(self, engine_id: str, link: EngineLink) -> None:
        await link.closed.wait()
        if self._links.get(engine_id) is link:
            del self._links[engine_id]
        for function_id, owner in list(self._remote.items()):
            if owner == engine_id:
                del self._remote[function_id]  # Core.link_lost removed them; a reload learns them again


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
