"""Several engines as one system: membership and the function registry on Redis, calls over links (issue 15).

What Redis holds (prefix ``iii:cluster:``):

* ``engine:{id}``: each engine's address (``--advertise-url``), with a short TTL that the engine refreshes every
  :attr:`Cluster.heartbeat_s`: an engine that dies drops out within :attr:`Cluster.ttl_s`;
* ``functions``: a hash of function id → the engine serving it (and ``descriptions``: their descriptions, for
  the other engines' listings). The first engine to claim an id keeps it
  (``HSETNX``), as the first worker keeps a function within one engine; an engine removes only its own entries,
  and the entries of an engine whose key expired are removed by whichever engine notices first;
* ``changes``: a pub/sub channel announcing each claim and removal, an engine's whole list of claims after it
  (re)connects (``serves``), and engines found gone (``gone``). Pub/sub delivers at most once, so an engine
  reloads the whole registry whenever its subscription (re)starts.

Every engine keeps a full copy: a function served by another engine is registered here with the
:class:`~iii.engine.links.EngineLink` to that engine as its owner, so no call touches Redis, and calls within an
engine never leave it. With Redis down, local calls and existing links go on (a reload keeps the functions of
engines whose links are up even when a restarted Redis has forgotten them: their engines claim them again); the
cluster converges when Redis is back.

Channels: in a cluster, a channel's id starts with its engine's id and a dot (:func:`channel_owner`), so any
engine can tell where a channel lives and relay a socket for it there (:mod:`iii.engine.channel_relay`); ends
released at an engine that does not own them are released at their owner (:meth:`Cluster.release_elsewhere`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any, Final

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from iii.engine.channels import channel_owner
from iii.engine.links import EngineLink, LinkError
from iii.protocol.codec import encode, encode_value
from iii.protocol.messages import InvokeFunction, TriggerAction

if TYPE_CHECKING:
    from iii.engine.core import Core

log = logging.getLogger("iii.engine.cluster")

RELEASE_FUNCTION: Final = "engine::channels::release"
REDIS_TIMEOUT_S: Final = 5.0

PREFIX: Final = "iii:cluster:"
FUNCTIONS_KEY: Final = PREFIX + "functions"
DESCRIPTIONS_KEY: Final = PREFIX + "descriptions"
CHANGES_CHANNEL: Final = PREFIX + "changes"
_RELEASE: Final = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""
"""Remove a function's entry only if this engine holds it."""
_PURGE: Final = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local removed = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  if entries[i + 1] == ARGV[1] then
    redis.call('HDEL', KEYS[1], entries[i])
    redis.call('HDEL', KEYS[3], entries[i])
    removed = removed + 1
  end
end
return removed
"""
"""Remove every entry of an engine whose key has expired (-1, nothing removed, if it is alive after all)."""
_END_WAIT_S: Final = 0.2
"""How long leaving waits for the background tasks after each cancellation."""
_END_ATTEMPTS: Final = 10
"""How many times leaving cancels a background task that goes on running."""


def new_engine_id() -> str:
    """A fresh engine id: short (it starts every channel id of the engine), unique enough for any cluster."""
    return secrets.token_hex(6)


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
        # Commands time out, so a Redis that stops answering is an error to retry, never a hang; the subscription
        # has a connection of its own (it is idle for as long as nothing changes), re-made by _listen alone.
        self._redis = aioredis.from_url(
            redis_url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
        )
        self._subscriber = aioredis.from_url(
            redis_url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_keepalive=True, retry=Retry(NoBackoff(), 0)
        )
        self._links: dict[str, EngineLink] = {}
        """Open links by engine id."""
        self._linking: dict[str, asyncio.Lock] = {}
        """One link made at a time per engine."""
        self._watching: set[str] = set()
        """Engines whose link was lost, watched until they are linked again or gone."""
        self._addresses: dict[str, str] = {}
        """The addresses of the engines this one has looked up (they do not change while an engine lives)."""
        self._remote: dict[str, str] = {}
        """Functions of other engines registered here: function id → engine id."""
        self._held: set[str] = set()
        """This engine's functions whose registry entry names it."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._sync_needed = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join: this engine's key, its channel ids, its functions claimed, the others' learned (in the
        background); raises ``RedisError`` or ``OSError`` when Redis cannot be reached at all."""
        await self._heartbeat_once()
        self.core.channels.id_prefix = f"{self.engine_id}."
        self.core.functions.change_listeners.append(self._sync_needed.set)
        self._sync_needed.set()
        for job in (self._heartbeat(), self._listen(), self._publish_local()):
            self._spawn(job)
        log.info("cluster: engine %s at %s joined", self.engine_id, self.advertise_url)

    async def stop(self) -> None:
        """Leave: release this engine's functions and key, close the links (their calls fail at once)."""
        await self._end_tasks()
        with contextlib.suppress(RedisError, OSError):
            for function_id in sorted(self._held):
                if await self._redis.eval(_RELEASE, 2, FUNCTIONS_KEY, DESCRIPTIONS_KEY, function_id, self.engine_id):
                    await self._announce({"op": "remove", "function_id": function_id})
            await self._redis.delete(self._engine_key(self.engine_id))
        for link in list(self._links.values()):
            link.close()
        await self._redis.aclose()
        await self._subscriber.aclose()

    async def _end_tasks(self) -> None:
        """Cancel this engine's background tasks and wait for them to end.

        A cancellation can be lost: one that lands while redis-py connects the subscription (seen with redis-py 8.1
        on Python 3.11, an engine stopped just after it joined) leaves the task running, listening for
        announcements that may never come. So each task still running after a short wait is cancelled again;
        the second cancellation reaches it where it waits. The caller's own cancellation is not swallowed here
        (the tasks used to be awaited under ``suppress(CancelledError)``, which also swallowed the caller's).
        """
        for _ in range(_END_ATTEMPTS):
            pending = [task for task in self._tasks if not task.done()]
            if not pending:
                return
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=_END_WAIT_S)
            for task in pending:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: a task that failed while leaving is of no interest now
        log.warning("cluster: %d background tasks did not end when cancelled", len(self._tasks))

    def _spawn(self, job: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def gauges(self) -> list[tuple[str, str, float]]:
        """What the metrics show of the cluster: (name, help, value)."""
        return [
            ("iii_cluster_links", "Open links to other engines of the cluster", sum(1 for _ in self._up_links())),
            (
                "iii_cluster_remote_functions",
                "Functions served by other engines, reached over links",
                len(self._remote),
            ),
            (
                "iii_cluster_functions_held",
                "This engine's functions it holds in the cluster's registry",
                len(self._held),
            ),
        ]

    def snapshot(self) -> dict[str, Any]:
        """What the console shows: this engine, and each other engine it knows with its link and functions."""
        engines: dict[str, dict[str, Any]] = {}
        for engine_id, address in self._addresses.items():
            link = self._links.get(engine_id)
            engines[engine_id] = {
                "engine_id": engine_id,
                "address": address,
                "link": "open" if link is not None and link.alive else "down",
                "functions": 0,
            }
        for engine_id in self._remote.values():
            if engine_id in engines:
                engines[engine_id]["functions"] += 1
        return {
            "engine_id": self.engine_id,
            "address": self.advertise_url,
            "functions_held": len(self._held),
            "engines": sorted(engines.values(), key=lambda row: str(row["engine_id"])),
        }

    def _up_links(self) -> list[EngineLink]:
        return [link for link in self._links.values() if link.alive]

    # --- this engine's functions --------------------------------------------------------------------------

    def _served_here(self) -> set[str]:
        """The functions a worker of this engine serves (not those it reaches over links)."""
        return {
            entry.function_id
            for entry in self.core.functions.entries()
            if entry.owner is not None and not isinstance(entry.owner, EngineLink)
        }

    async def _publish_local(self) -> None:
        """Claim what this engine serves, release what it no longer does: on every change of its functions,
        and when an entry it could not claim may have become free."""
        while True:
            await self._sync_needed.wait()
            self._sync_needed.clear()
            try:
                await self._sync_claims()
            except (RedisError, OSError) as error:
                log.warning("cluster: the registry could not be updated (%s); retrying", error)
                await asyncio.sleep(self.heartbeat_s)
                self._sync_needed.set()

    async def _sync_claims(self) -> None:
        served = self._served_here()
        for function_id in sorted(served - self._held):
            if await self._redis.hsetnx(FUNCTIONS_KEY, function_id, self.engine_id):
                self._held.add(function_id)
                entry = self.core.functions.get(function_id)
                if entry is not None and entry.description:
                    await self._redis.hset(DESCRIPTIONS_KEY, function_id, entry.description)
                await self._announce({"op": "add", "function_id": function_id})
            else:
                holder = _text(await self._redis.hget(FUNCTIONS_KEY, function_id) or b"")
                if holder == self.engine_id:
                    self._held.add(function_id)  # held since before Redis was lost
                elif holder and await self.address_of(holder) is None:
                    await self._purge(holder)  # its engine is gone and no one purged it: claim on the next pass
                elif holder:
                    await self._learn(function_id, holder)  # held elsewhere: this engine's worker stands by
        for function_id in sorted(self._held - served):
            self._held.discard(function_id)
            if await self._redis.eval(_RELEASE, 2, FUNCTIONS_KEY, DESCRIPTIONS_KEY, function_id, self.engine_id):
                await self._announce({"op": "remove", "function_id": function_id})

    async def _claim_again(self) -> None:
        """After a lost subscription: Redis may have restarted empty; say this engine is here, claim everything
        again and tell the others the whole list, so that they drop what this engine stopped serving meanwhile."""
        await self._heartbeat_once()
        self._held.clear()
        await self._sync_claims()
        await self._announce({"op": "serves", "function_ids": sorted(self._held)})

    async def _announce(self, change: dict[str, Any]) -> None:
        await self._redis.publish(CHANGES_CHANNEL, json.dumps({**change, "engine_id": self.engine_id}))

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
            if self._served_here() - self._held:
                # Served here but held elsewhere: try again each beat, since the news that frees it (a purge, an
                # announcement) can be lost with Redis or a watch that gave up; a live holder costs two commands.
                self._sync_needed.set()

    async def address_of(self, engine_id: str) -> str | None:
        """The address of a live engine of the cluster; None if it is not (or no longer) one."""
        address = self._addresses.get(engine_id)
        if address is None:
            found = await self._redis.get(self._engine_key(engine_id))
            if found is None:
                return None
            address = self._addresses[engine_id] = _text(found)
        return address

    async def _purge(self, engine_id: str) -> None:
        """Remove a dead engine's entries so that others may claim its functions, and say so."""
        removed = await self._redis.eval(
            _PURGE, 3, FUNCTIONS_KEY, self._engine_key(engine_id), DESCRIPTIONS_KEY, engine_id
        )
        if removed >= 0:
            log.info("cluster: engine %s is gone (%d functions released)", engine_id, removed)
            await self._redis.publish(CHANGES_CHANNEL, json.dumps({"op": "gone", "engine_id": engine_id}))
            self._sync_needed.set()

    # --- the other engines' functions ----------------------------------------------------------------------

    async def _listen(self) -> None:
        """Follow the announcements; reload the whole registry whenever the subscription (re)starts."""
        first = True
        while True:
            try:
                async with self._subscriber.pubsub() as pubsub:
                    await pubsub.subscribe(CHANGES_CHANNEL)
                    if not first:
                        await self._claim_again()
                    first = False
                    await self._reload()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self._apply(json.loads(message["data"]))
            except (RedisError, OSError) as error:
                log.warning("cluster: lost the registry's announcements (%s); reloading when Redis is back", error)
                await asyncio.sleep(self.heartbeat_s)

    async def _reload(self) -> None:
        registry = await self._redis.hgetall(FUNCTIONS_KEY)
        wanted = {_text(key): _text(value) for key, value in registry.items()}
        for function_id, engine_id in list(self._remote.items()):
            named = wanted.get(function_id)
            if named is None and self._link_up(engine_id):
                continue  # a restarted Redis forgot it; its engine, alive, claims it again
            if named != engine_id:
                self._forget(function_id)
        others = {engine_id for engine_id in wanted.values() if engine_id != self.engine_id}
        for engine_id in sorted(others):
            # An expired key with a live link is an engine that could not refresh it (Redis was away longer
            # than the key's TTL, and came back with its data): it lives, and claims its functions again.
            if not self._link_up(engine_id) and not await self._redis.exists(self._engine_key(engine_id)):
                await self._purge(engine_id)  # died while nobody watched
        for function_id, engine_id in wanted.items():
            if engine_id != self.engine_id:
                await self._learn(function_id, engine_id)

    async def _apply(self, change: dict[str, Any]) -> None:
        op, engine_id = change.get("op"), str(change.get("engine_id"))
        if engine_id == self.engine_id:
            if op == "gone":  # taken for dead (its key was missing for a moment): claim everything again
                log.warning("cluster: this engine was taken for gone; claiming its functions again")
                await self._heartbeat_once()
                self._held.clear()
                self._sync_needed.set()
            return
        if op == "add":
            await self._learn(str(change.get("function_id")), engine_id)
        elif op == "remove":
            function_id = str(change.get("function_id"))
            if self._remote.get(function_id) == engine_id:
                self._forget(function_id)
            self._sync_needed.set()  # a worker here may stand by for it
        elif op == "serves":
            still = set(change.get("function_ids") or ())
            for function_id, owner in list(self._remote.items()):
                if owner == engine_id and function_id not in still:
                    self._forget(function_id)
        elif op == "gone":  # from another engine, about a third
            if not self._link_up(engine_id):  # else it lives: it reads this too, and claims its functions again
                for function_id, owner in list(self._remote.items()):
                    if owner == engine_id:
                        self._forget(function_id)
            self._sync_needed.set()

    async def _learn(self, function_id: str, engine_id: str) -> None:
        if self._remote.get(function_id) == engine_id:
            return
        link = await self._link(engine_id)
        if link is None:
            return
        description = await self._redis.hget(DESCRIPTIONS_KEY, function_id)
        if self.core.add_remote_function(function_id, link, _text(description) if description else None):
            self._remote[function_id] = engine_id

    def _forget(self, function_id: str) -> None:
        engine_id = self._remote.pop(function_id, None)
        link = self._links.get(engine_id) if engine_id is not None else None
        if link is not None:
            self.core.remove_remote_function(function_id, link)

    # --- channels ---------------------------------------------------------------------------------------------

    def release_elsewhere(self, ends: list[dict[str, Any]], reason: str) -> int:
        """Release channel ends owned by other engines at their owners (``engine::channels::release`` over the
        link, answered by no one); returns how many ends were sent on."""
        by_owner: dict[str, list[dict[str, Any]]] = {}
        for ref in ends:
            owner = channel_owner(str(ref.get("channel_id", "")))
            if owner is not None and owner != self.engine_id:
                by_owner.setdefault(owner, []).append(ref)
        for owner, refs in by_owner.items():
            self._spawn(self._release_at(owner, refs, reason))
        return sum(len(refs) for refs in by_owner.values())

    async def _release_at(self, engine_id: str, ends: list[dict[str, Any]], reason: str) -> None:
        try:
            link = await self._link(engine_id)
        except (RedisError, OSError) as error:
            log.warning("cluster: %d channel ends of engine %s not released there (%s)", len(ends), engine_id, error)
            return
        if link is None:
            return  # that engine is gone, and its channels with it
        payload = msgspec.Raw(encode_value({"ends": ends, "reason": reason}))
        action = TriggerAction("void")
        link.send_message(encode(InvokeFunction(function_id=RELEASE_FUNCTION, data=payload, action=action)))

    # --- links ------------------------------------------------------------------------------------------------

    def _link_up(self, engine_id: str) -> bool:
        link = self._links.get(engine_id)
        return link is not None and link.alive

    async def _link(self, engine_id: str, *, watch: bool = True) -> EngineLink | None:
        """The open link to ``engine_id``, made if needed; None when that engine is gone or unreachable (and,
        with ``watch``, its functions are released once its key expires)."""
        async with self._linking.setdefault(engine_id, asyncio.Lock()):
            link = self._links.get(engine_id)
            if link is not None and link.alive:
                return link
            address = await self.address_of(engine_id)
            if address is None:
                return None  # its key expired: the engine is gone
            link = EngineLink(self.core, address, token=self.token, name=f"engine {engine_id} at {address}")
            try:
                await link.open()
            except LinkError as error:
                log.warning("cluster: engine %s unreachable: %s", engine_id, error)
                if watch:
                    self._spawn(self._check_gone(engine_id))
                return None
            self._links[engine_id] = link
        self._spawn(self._when_closed(engine_id, link))
        return link

    async def _when_closed(self, engine_id: str, link: EngineLink) -> None:
        await link.closed.wait()
        if self._links.get(engine_id) is link:
            del self._links[engine_id]
        for function_id, owner in list(self._remote.items()):
            if owner == engine_id:
                del self._remote[function_id]  # Core.link_lost removed them
        await self._check_gone(engine_id)

    async def _check_gone(self, engine_id: str) -> None:
        """After losing (or failing to make) a link: once the engine's key has expired, release its functions;
        while it lives (a link lost to the network, not to a crash), link to it again and learn them again."""
        if engine_id in self._watching:
            return
        self._watching.add(engine_id)
        try:
            await self._watch(engine_id)
        finally:
            self._watching.discard(engine_id)

    async def _watch(self, engine_id: str) -> None:
        for _ in range(int(self.ttl_s / self.heartbeat_s) + 3):
            await asyncio.sleep(self.heartbeat_s)
            if self._link_up(engine_id):
                return
            try:
                if not await self._redis.exists(self._engine_key(engine_id)):
                    self._addresses.pop(engine_id, None)
                    await self._purge(engine_id)
                    return
                if await self._link(engine_id, watch=False) is not None:
                    await self._reload()
                    return
            except (RedisError, OSError) as error:
                log.warning("cluster: cannot check engine %s (%s)", engine_id, error)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
