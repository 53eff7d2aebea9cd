"""The Redis backend (redis-py asyncio): per scope a hash of values (the JSON bytes) and a hash of versions.

Layout, under the ``redis_key_prefix`` (``iii:state:``): ``values:{scope}`` maps each key to its value's
JSON, ``versions:{scope}`` maps it to its version, and ``scopes`` is the set of non-empty scopes. Several
engines on one Redis share the data.

**Atomic writes, ops applied in Python.** A plain ``put`` (``state::set``) is one script that writes and
returns what it replaced. Any other write reads the entry (value and version, one script), runs the
change in Python, and stores the result with a compare-and-set script that writes only if the version is
still the one read; otherwise it reads again and retries (another writer got there first). Applying update
ops in a Lua script instead would re-encode the whole value with Redis' cjson, which rounds numbers to 14
significant digits and turns ``[]`` into ``{}`` in fields the update never touched; here the ops and their
edge cases are the same code for both backends. Writes to one key from this process wait for each other
(a lock per key), so only writers in other processes can make a write retry.

**Pipelined.** The scripts of concurrent calls go to Redis together, in pipelines on one connection
(:mod:`iii.modules.redis_pipeline`): one round trip, and a fraction of redis-py's CPU per command.

**Durability** is Redis': an answered write is in Redis' memory; it survives Redis restarting only as its
persistence is configured (``appendonly yes`` with ``appendfsync always`` for what the SQLite backend's
``synchronous=FULL`` promises).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from iii.modules.redis_pipeline import Pipeliner
from iii.modules.state.store import Applied, Change, Entry, R, StoreError, VersionConflict

MAX_ATTEMPTS: Final = 100
"""A write that lost this many races in a row fails (StoreError) instead of trying forever."""

_READ: Final = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return false end
return {value, redis.call('HGET', KEYS[2], ARGV[1])}
"""
# KEYS: values, versions, scopes. ARGV: key, version read (0: absent), scope, and the new value (absent: delete).
# Returns the key's version after the write (0: deleted), or -1 if the version is no longer the one read.
_WRITE: Final = """
local current = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if current ~= tonumber(ARGV[2]) then return -1 end
if ARGV[4] == nil then
  if current > 0 then
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('HDEL', KEYS[2], ARGV[1])
    if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[3]) end
  end
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], current + 1)
redis.call('SADD', KEYS[3], ARGV[3])
return current + 1
"""

# KEYS: values, versions, scopes. ARGV: key, scope, value, expected version ('': any).
# Returns {version after the write, the replaced value or false}, or {-1, the current version} on a mismatch.
_PUT: Final = """
local current = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if ARGV[4] ~= '' and current ~= tonumber(ARGV[4]) then return {-1, current} end
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], current + 1)
redis.call('SADD', KEYS[3], ARGV[2])
return {current + 1, old}
"""


class _KeyLocks:
    """One asyncio lock per key in use; a key's lock is dropped when no one holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, scope: str, key: str) -> AsyncIterator[None]:
        name = (scope, key)
        lock, users = self._locks.get(name, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)


class RedisStore:
    """See the module docstring. Open with :meth:`open`."""

    kind = "redis"

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._read_script = client.register_script(_READ)
        self._write_script = client.register_script(_WRITE)
        self._put_script = client.register_script(_PUT)
        self._pipeline = Pipeliner(client)
        self._locks = _KeyLocks()
        self._closed = False
        self._writing = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.writes = 0
        self.retries = 0
        """Writes run again because another process changed the key between the read and the write."""

    @classmethod
    async def open(cls, url: str, *, prefix: str = "iii:state:") -> RedisStore:
        """Connect to ``url`` (and check that Redis answers)."""
        client = aioredis.Redis.from_url(url)
        try:
            await client.ping()
        except RedisError as error:
            await client.aclose()
            raise StoreError(f"Redis at {_address(client)} did not answer: {error}") from error
        return cls(client, prefix)

    def _keys(self, scope: str) -> list[str]:
        return [f"{self._prefix}values:{scope}", f"{self._prefix}versions:{scope}", f"{self._prefix}scopes"]

    async def get(self, scope: str, key: str) -> Entry | None:
        self._check_open()
        return await self._read_entry(scope, key)

    async def _read_entry(self, scope: str, key: str) -> Entry | None:
        try:
            found = await self._pipeline.script(self._read_script, self._keys(scope)[:2], [key])
        except RedisError as error:
            raise StoreError(f"Redis failed: {error}") from error
        if found is None:
            return None
        value, version = found
        return Entry(value, int(version))

    @contextmanager
    def _write_under_way(self) -> Iterator[None]:
        """Count a write until it ends, so that close() can wait for it; refuse it once closed."""
        self._check_open()
        self._writing += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._writing -= 1
            if self._writing == 0:
                self._idle.set()

    async def mutate(self, scope: str, key: str, change: Change[R]) -> Applied[R]:
        with self._write_under_way():
            return await self._mutate(scope, key, change)

    async def put(self, scope: str, key: str, value: bytes, expected_version: int | None = None) -> Applied[None]:
        args = [key, scope, value, "" if expected_version is None else expected_version]
        with self._write_under_way():
            try:
                version, old = await self._pipeline.script(self._put_script, self._keys(scope), args)
            except RedisError as error:
                raise StoreError(f"Redis failed: {error}") from error
        if version < 0:
            raise VersionConflict(int(old))
        self.writes += 1
        # The replaced entry's version is the one before this write's.
        return Applied(Entry(old, version - 1) if old is not None else None, version, None)

    async def _mutate(self, scope: str, key: str, change: Change[R]) -> Applied[R]:
        async with self._locks.hold(scope, key):
            for attempt in range(MAX_ATTEMPTS):
                old = await self._read_entry(scope, key)
                encoded, outcome = change(old)
                if encoded is None and old is None:
                    return Applied(None, 0, outcome)  # deleting what is not there writes nothing
                args: list[Any] = [key, old.version if old is not None else 0, scope]
                if encoded is not None:
                    args.append(encoded)
                try:
                    version = int(await self._pipeline.script(self._write_script, self._keys(scope), args))
                except RedisError as error:
                    raise StoreError(f"Redis failed: {error}") from error
                if version >= 0:
                    self.writes += 1
                    return Applied(old, version, outcome)
                self.retries += 1
                # Another process wrote the key: back off a little (randomly, so two writers do not collide
                # again in step), then read it again.
                await asyncio.sleep(random.uniform(0, min(0.0005 * (attempt + 1), 0.02)))
        raise StoreError(f"gave up writing {scope}/{key} after {MAX_ATTEMPTS} conflicting writes by others")

    async def values(self, scope: str) -> list[bytes]:
        self._check_open()
        try:
            values = cast(dict[bytes, bytes], await self._client.hgetall(self._keys(scope)[0]))
        except RedisError as error:
            raise StoreError(f"Redis failed: {error}") from error
        return [values[key] for key in sorted(values)]  # UTF-8 byte order is code point order, as in SQLite

    async def first_entries(self, scope: str, limit: int) -> tuple[int, list[tuple[str, bytes]]]:
        """Reads every key name of the scope (not the values) to find the first ``limit`` in order."""
        self._check_open()
        values_key = self._keys(scope)[0]
        try:
            names = sorted(cast(list[bytes], await self._client.hkeys(values_key)))
            first = names[:limit]
            values = cast(list[bytes | None], await self._client.hmget(values_key, first)) if first else []
        except RedisError as error:
            raise StoreError(f"Redis failed: {error}") from error
        # a key deleted between the two reads is left out
        return len(names), [(k.decode(), v) for k, v in zip(first, values, strict=True) if v is not None]

    async def scopes(self) -> list[str]:
        self._check_open()
        try:
            members = cast(set[bytes], await self._client.smembers(self._keys("")[2]))
        except RedisError as error:
            raise StoreError(f"Redis failed: {error}") from error
        return sorted(member.decode() for member in members)

    async def scope_counts(self) -> dict[str, int]:
        scopes = await self.scopes()
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for scope in scopes:
                    pipe.hlen(self._keys(scope)[0])
                counts = await pipe.execute()
        except RedisError as error:
            raise StoreError(f"Redis failed: {error}") from error
        return {scope: int(count) for scope, count in zip(scopes, counts, strict=True) if count}

    def counters(self) -> Mapping[str, int]:
        return {
            "writes": self.writes,
            "retries": self.retries,
            "pipelines": self._pipeline.batches,
            "pipelined_commands": self._pipeline.commands,
        }

    def describe(self) -> str:
        return f"redis://{_address(self._client)}"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the state store is closed")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._idle.wait()  # the writes under way finish (new ones are refused)
        await self._pipeline.close()
        await self._client.aclose()


def _address(client: aioredis.Redis) -> str:
    """host:port/db of a client, without credentials."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"{kwargs['path']}/{kwargs.get('db', 0)}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
