"""The Redis backend of the queues: Redis Streams with a consumer group, moved by Lua scripts.

Several engines on one Redis (5.0 or later: streams) share the queues: each opens the store under its own stable
``consumer`` name.

Layout, under the prefix (``iii:queue:``):

- ``m:{message id}``: a hash per message: its fields (queue, function_id, data, group, attempts, enqueued_at_ms,
  available_at_ms, traceparent, baggage, last_error), ``seq`` (its number in the order of adds) and ``state``:
  ``ready``, ``waiting`` (a FIFO group's message behind the group's first), ``leased`` or ``dead``.
- ``ready:{queue}``: a sorted set of the ready messages, scored by ``available_at_ms`` (the due time); the member is
  the ``seq``, zero-padded, then the message id, so that messages due at the same time sort in the order they were
  added.
- ``stream:{queue}``: a stream with the consumer group ``iii``. Claiming a message adds an entry (``m``: the id) and
  reads it with ``XREADGROUP`` as this engine's consumer, in the same script: the group's pending entries list
  (PEL) is the list of leases and who holds them (``recover`` reads this consumer's with ``XPENDING``). Ack, retry,
  release and bury end the lease with ``XACK`` + ``XDEL``, so the stream holds only the messages being delivered.
- ``leases``: a sorted set of the leased message ids scored by the lease's end (``reclaim``): a claim's lease length
  is the dispatcher's (``lease_ms``), so the end is kept exactly rather than read off the PEL's idle times.
- ``group:{len(queue)}:{queue}:{group}``: a FIFO group's list of message ids, in order. Only its first message is
  ever ready or leased; when it leaves (acknowledged or buried) the next one becomes ready.
- ``dead:{queue}``: the dead letters, a sorted set scored by ``seq`` (oldest first).
- ``counts:{queue}``: a hash ``ready`` / ``leased`` / ``dead``, kept by the scripts; ``queues``: the set of queue
  names; ``seq``: the counter of adds.

**Atomic, across engines.** Every operation is one Lua script (``EVALSHA``), which Redis runs alone: a claim takes
due messages from ``ready:``, records them in the stream and the PEL and the lease set in one step, so two engines
never lease one message, and a FIFO group never has two messages ready or leased (the group's order is the list,
and only its head moves). The scripts build the message keys they touch from the prefix: fine on one Redis, not
on Redis Cluster.

**Pipelined.** The scripts of concurrent calls go to Redis together (:mod:`iii.modules.redis_pipeline`).

**Durability** is Redis': an answered ``add`` is in Redis' memory; it survives Redis restarting only as Redis'
persistence is configured (``appendonly yes`` with ``appendfsync always`` fsyncs each write before answering;
``everysec`` may lose the last second; replicas are asynchronous).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from iii.modules.queue.store import NewMessage, QueueCounts, StoredMessage, StoreError
from iii.modules.redis_pipeline import Pipeliner
from iii.modules.redis_urls import redacted

BATCH: Final = 1000
"""Scripts that sweep (reclaim, recover, redrive) move at most this many messages each, so that no one script
holds Redis for long; they run again until done."""

_COUNTS: Final = ("ready", "leased", "dead")
_ABSENT: Final = ord("-")

# Every script starts with this: ARGV[1] is the key prefix. The helpers keep the counts with the states.
_COMMON: Final = """
local P = ARGV[1]
local GROUP = 'iii'
local function mkey(id) return P .. 'm:' .. id end
local function key(kind, queue) return P .. kind .. ':' .. queue end
local function group_key(queue, group) return P .. 'group:' .. #queue .. ':' .. queue .. ':' .. group end
local function member(seq, id) return string.format('%016d', tonumber(seq)) .. id end
-- what a message's reader needs, in one string (FIELDS' order; each '-' when absent, else its length, ':' and
-- the value): one reply element per message instead of a hash's dozens, which redis-py parses slowly
local FIELDS = {'id', 'queue', 'function_id', 'data', 'group', 'attempts', 'enqueued_at_ms', 'available_at_ms',
  'traceparent', 'baggage', 'last_error'}
local function packed(id)
  local values = redis.call('HMGET', mkey(id), unpack(FIELDS))
  for i = 1, #FIELDS do
    if values[i] then values[i] = #values[i] .. ':' .. values[i] else values[i] = '-' end
  end
  return table.concat(values)
end
local function count(queue, field, by) redis.call('HINCRBY', key('counts', queue), field, by) end
local function get(id)
  local f = redis.call('HMGET', mkey(id), 'queue', 'state', 'seq', 'group', 'entry', 'available_at_ms')
  if not f[1] then return nil end
  return {queue = f[1], state = f[2], seq = f[3], group = f[4], entry = f[5], available_at = f[6]}
end
-- ready (due at its available_at_ms); the caller counts it
local function to_ready(id, m)
  redis.call('ZADD', key('ready', m.queue), m.available_at, member(m.seq, id))
  redis.call('HSET', mkey(id), 'state', 'ready')
end
-- the lease ends: out of the PEL, the stream and the lease set
local function unlease(id, m)
  local stream = key('stream', m.queue)
  redis.call('XACK', stream, GROUP, m.entry)
  redis.call('XDEL', stream, m.entry)
  redis.call('ZREM', P .. 'leases', id)
  redis.call('HDEL', mkey(id), 'entry')
  count(m.queue, 'leased', -1)
end
-- appended to its FIFO group: ready if it is the group's first, else waiting behind it
local function join_group(id, m)
  if redis.call('RPUSH', group_key(m.queue, m.group), id) == 1 then
    to_ready(id, m)
  else
    redis.call('HSET', mkey(id), 'state', 'waiting')
  end
end
-- out of its FIFO group; if it was the first, the next one is ready
local function leave_group(id, m)
  local list = group_key(m.queue, m.group)
  local first = redis.call('LINDEX', list, 0)
  redis.call('LREM', list, 1, id)
  if first == id then
    local next_id = redis.call('LINDEX', list, 0)
    if next_id then to_ready(next_id, get(next_id)) end
  end
end
"""

# ARGV: prefix, enqueued_at_ms, then 8 per message: id, queue, function_id, data, group, available_at_ms,
# traceparent, baggage (the optional ones '' when absent, else '=' and the value). Returns how many were added.
_ADD: Final = """
local added = 0
for i = 3, #ARGV, 8 do
  local id = ARGV[i]
  if redis.call('EXISTS', mkey(id)) == 0 then
    local m = {queue = ARGV[i + 1], available_at = ARGV[i + 5], seq = redis.call('INCR', P .. 'seq')}
    local fields = {'id', id, 'queue', m.queue, 'function_id', ARGV[i + 2], 'data', ARGV[i + 3], 'attempts', 0,
      'enqueued_at_ms', ARGV[2], 'available_at_ms', m.available_at, 'seq', m.seq}
    for j, name in pairs({[4] = 'group', [6] = 'traceparent', [7] = 'baggage'}) do
      local value = ARGV[i + j]
      if value ~= '' then
        fields[#fields + 1] = name
        fields[#fields + 1] = string.sub(value, 2)
      end
    end
    redis.call('HSET', mkey(id), unpack(fields))
    redis.call('SADD', P .. 'queues', m.queue)
    count(m.queue, 'ready', 1)
    m.group = redis.call('HGET', mkey(id), 'group')
    if m.group then join_group(id, m) else to_ready(id, m) end
    added = added + 1
  end
end
return added
"""

# ARGV: prefix, queue, now_ms, limit, lease_ms, consumer. Returns the leased messages, packed.
_CLAIM: Final = """
local queue = ARGV[2]
local ready = key('ready', queue)
local due = redis.call('ZRANGEBYSCORE', ready, '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
if #due == 0 then return {} end
local stream = key('stream', queue)
if redis.call('EXISTS', stream) == 0 then redis.call('XGROUP', 'CREATE', stream, GROUP, '$', 'MKSTREAM') end
for _, ranked in ipairs(due) do
  redis.call('ZREM', ready, ranked)
  redis.call('XADD', stream, '*', 'm', string.sub(ranked, 17))
end
-- the stream has no other unread entry: every claim reads what it adds
local read = redis.call('XREADGROUP', 'GROUP', GROUP, ARGV[6], 'COUNT', #due, 'STREAMS', stream, '>')
local ends = tonumber(ARGV[3]) + tonumber(ARGV[5])
local leased = {}
for _, entry in ipairs(read[1][2]) do
  local id = entry[2][2]
  redis.call('HSET', mkey(id), 'state', 'leased', 'entry', entry[1])
  redis.call('ZADD', P .. 'leases', ends, id)
  leased[#leased + 1] = packed(id)
end
count(queue, 'ready', -#leased)
count(queue, 'leased', #leased)
return leased
"""

# ARGV: prefix, id. Returns 1 if the message was there.
_ACK: Final = """
local id = ARGV[2]
local m = get(id)
if not m then return 0 end
if m.state == 'leased' then
  unlease(id, m)
else
  count(m.queue, m.state == 'dead' and 'dead' or 'ready', -1)
  if m.state == 'ready' then redis.call('ZREM', key('ready', m.queue), member(m.seq, id)) end
  if m.state == 'dead' then redis.call('ZREM', key('dead', m.queue), id) end
end
if m.group and m.state ~= 'dead' then leave_group(id, m) end
redis.call('DEL', mkey(id))
return 1
"""

# ARGV: prefix, id, 'retry' | 'release' | 'bury', available_at_ms (retry), error JSON (retry, bury).
# Returns 1 if the message was leased (else nothing changes).
_SETTLE: Final = """
local id = ARGV[2]
local mode = ARGV[3]
local m = get(id)
if not m or m.state ~= 'leased' then return 0 end
unlease(id, m)
if mode ~= 'release' then
  redis.call('HINCRBY', mkey(id), 'attempts', 1)
  redis.call('HSET', mkey(id), 'last_error', ARGV[5])
end
if mode == 'bury' then
  redis.call('HSET', mkey(id), 'state', 'dead')
  redis.call('ZADD', key('dead', m.queue), m.seq, id)
  count(m.queue, 'dead', 1)
  if m.group then leave_group(id, m) end
else
  if mode == 'retry' then
    m.available_at = ARGV[4]
    redis.call('HSET', mkey(id), 'available_at_ms', m.available_at)
  end
  count(m.queue, 'ready', 1)
  to_ready(id, m)
end
return 1
"""

# ARGV: prefix, now_ms, batch. Returns {leases looked at, messages made ready}.
_RECLAIM: Final = """
local ids = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local made_ready = 0
for _, id in ipairs(ids) do
  local m = get(id)
  if m and m.state == 'leased' then
    unlease(id, m)
    count(m.queue, 'ready', 1)
    to_ready(id, m)
    made_ready = made_ready + 1
  else
    redis.call('ZREM', P .. 'leases', id)
  end
end
return {#ids, made_ready}
"""

# ARGV: prefix, queue, consumer, batch. Returns {pending entries looked at, messages made ready}.
_RECOVER: Final = """
local stream = key('stream', ARGV[2])
if redis.call('EXISTS', stream) == 0 then return {0, 0} end
local pending = redis.call('XPENDING', stream, GROUP, '-', '+', tonumber(ARGV[4]), ARGV[3])
local made_ready = 0
for _, entry in ipairs(pending) do
  local found = redis.call('XRANGE', stream, entry[1], entry[1])[1]
  local id = found and found[2][2]
  local m = id and get(id)
  if m and m.state == 'leased' and m.entry == entry[1] then
    unlease(id, m)
    count(m.queue, 'ready', 1)
    to_ready(id, m)
    made_ready = made_ready + 1
  else
    redis.call('XACK', stream, GROUP, entry[1])
    redis.call('XDEL', stream, entry[1])
  end
end
return {#pending, made_ready}
"""

# ARGV: prefix, queue, batch, id ('': the oldest dead messages). Returns how many were made ready.
_REDRIVE: Final = """
local queue = ARGV[2]
local ids = {ARGV[4]}
if ARGV[4] == '' then ids = redis.call('ZRANGE', key('dead', queue), 0, tonumber(ARGV[3]) - 1) end
local redriven = 0
for _, id in ipairs(ids) do
  local m = get(id)
  if m and m.state == 'dead' and m.queue == queue then
    redis.call('ZREM', key('dead', queue), id)
    redis.call('HSET', mkey(id), 'attempts', 0)
    count(queue, 'dead', -1)
    count(queue, 'ready', 1)
    if m.group then join_group(id, m) else to_ready(id, m) end
    redriven = redriven + 1
  end
end
return redriven
"""

# ARGV: prefix, queue, id. Returns 1 if it was a dead message of the queue (deleted).
_DISCARD: Final = """
local m = get(ARGV[3])
if not m or m.state ~= 'dead' or m.queue ~= ARGV[2] then return 0 end
redis.call('ZREM', key('dead', m.queue), ARGV[3])
redis.call('DEL', mkey(ARGV[3]))
count(m.queue, 'dead', -1)
return 1
"""

# ARGV: prefix, queue, limit. Returns the oldest dead messages, packed.
_DEAD: Final = """
local found = {}
for _, id in ipairs(redis.call('ZRANGE', key('dead', ARGV[2]), 0, tonumber(ARGV[3]) - 1)) do
  found[#found + 1] = packed(id)
end
return found
"""


def _optional(value: str | None) -> str:
    """An optional script argument: '' for None, else '=' and the value."""
    return "" if value is None else "=" + value


def _message(packed: bytes) -> StoredMessage:
    """A message from the scripts' packing of its fields (see ``packed`` in the scripts)."""
    values: list[bytes | None] = []
    at = 0
    while at < len(packed):
        if packed[at] == _ABSENT:
            values.append(None)
            at += 1
            continue
        colon = packed.index(b":", at)
        start = colon + 1
        at = start + int(packed[at:colon])
        values.append(packed[start:at])
    message_id, queue, function_id, data, group, attempts, enqueued, available, traceparent, baggage, error = values
    assert message_id is not None and queue is not None and function_id is not None and data is not None
    return StoredMessage(
        message_id=message_id.decode(),
        queue=queue.decode(),
        function_id=function_id.decode(),
        data=data,
        group=None if group is None else group.decode(),
        attempts=int(attempts or 0),
        enqueued_at_ms=int(enqueued or 0),
        available_at_ms=int(available or 0),
        traceparent=None if traceparent is None else traceparent.decode(),
        baggage=None if baggage is None else baggage.decode(),
        last_error=None if error is None else json.loads(error),
    )


class RedisQueueStore:
    """See the module docstring. Open with :meth:`open`."""

    kind = "redis"

    def __init__(self, client: aioredis.Redis, prefix: str, consumer: str) -> None:
        self._client = client
        self._prefix = prefix
        self._consumer = consumer
        self._scripts = {
            name: client.register_script(_COMMON + source)
            for name, source in [
                ("add", _ADD),
                ("claim", _CLAIM),
                ("ack", _ACK),
                ("settle", _SETTLE),
                ("reclaim", _RECLAIM),
                ("recover", _RECOVER),
                ("redrive", _REDRIVE),
                ("discard", _DISCARD),
                ("dead", _DEAD),
            ]
        }
        self._pipeline = Pipeliner(client)
        self._closed = False
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @classmethod
    async def open(cls, redis_url: str, *, prefix: str = "iii:queue:", consumer: str) -> RedisQueueStore:
        """Connect to ``redis_url`` (and check that Redis answers); ``consumer`` is this engine's stable name in the
        consumer groups (what it leased in an earlier life is what :meth:`recover` gives back)."""
        if not consumer:
            raise ValueError("the consumer name is empty")
        client = aioredis.Redis.from_url(redis_url)
        try:
            await client.ping()
        except RedisError as error:
            await client.aclose()
            raise StoreError(f"Redis at {redacted(redis_url)} did not answer: {error}") from error
        return cls(client, prefix, consumer)

    @contextmanager
    def _under_way(self) -> Iterator[None]:
        """Count an operation until it ends, so that close() can wait for it; refuse it once closed."""
        if self._closed:
            raise StoreError("the queue store is closed")
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    async def _run(self, name: str, *args: Any) -> Any:
        script: AsyncScript = self._scripts[name]
        with self._under_way():
            try:
                return await self._pipeline.script(script, [], [self._prefix, *args])
            except RedisError as error:
                raise StoreError(f"Redis failed: {error}") from error

    async def add(self, messages: list[NewMessage]) -> None:
        if not messages:
            return
        args: list[Any] = [int(time.time() * 1000)]
        for message in messages:
            args += [
                message.message_id,
                message.queue,
                message.function_id,
                message.data,
                _optional(message.group),
                message.available_at_ms,
                _optional(message.traceparent),
                _optional(message.baggage),
            ]
        await self._run("add", *args)

    async def claim(
        self, queue: str, limit: int, now_ms: int, lease_ms: int, *, fifo: bool = False
    ) -> list[StoredMessage]:
        # ``fifo`` needs nothing here: a message added with a group is held behind its group's first whatever the
        # claim says (only a FIFO queue's messages have a group).
        if limit <= 0:
            return []
        leased = await self._run("claim", queue, now_ms, limit, lease_ms, self._consumer)
        return [_message(packed) for packed in leased]

    async def ack(self, message_id: str) -> None:
        await self._run("ack", message_id)

    async def retry(self, message_id: str, available_at_ms: int, error: dict[str, Any]) -> None:
        await self._run("settle", message_id, "retry", available_at_ms, json.dumps(error))

    async def release(self, message_id: str) -> None:
        await self._run("settle", message_id, "release", 0, "")

    async def bury(self, message_id: str, error: dict[str, Any]) -> None:
        await self._run("settle", message_id, "bury", 0, json.dumps(error))

    async def recover(self) -> int:
        made_ready = 0
        for queue in await self._queue_names():
            while True:
                looked_at, count = await self._run("recover", queue, self._consumer, BATCH)
                made_ready += int(count)
                if looked_at < BATCH:
                    break
        return made_ready

    async def reclaim(self, now_ms: int) -> int:
        made_ready = 0
        while True:
            looked_at, count = await self._run("reclaim", now_ms, BATCH)
            made_ready += int(count)
            if looked_at < BATCH:
                return made_ready

    async def redrive(self, queue: str) -> int:
        redriven = 0
        while True:
            count = int(await self._run("redrive", queue, BATCH, ""))
            redriven += count
            if count < BATCH:
                return redriven

    async def redrive_message(self, queue: str, message_id: str) -> bool:
        return bool(await self._run("redrive", queue, 1, message_id))

    async def discard(self, queue: str, message_id: str) -> bool:
        return bool(await self._run("discard", queue, message_id))

    async def dead(self, queue: str, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        return [_message(packed) for packed in await self._run("dead", queue, limit)]

    async def queues(self) -> dict[str, QueueCounts]:
        names = await self._queue_names()
        with self._under_way():
            try:
                replies = await asyncio.gather(
                    *(self._pipeline.execute("HMGET", self._key(f"counts:{name}"), *_COUNTS) for name in names)
                )
            except RedisError as error:
                raise StoreError(f"Redis failed: {error}") from error
        counts: dict[str, QueueCounts] = {}
        for name, reply in zip(names, replies, strict=True):
            ready, leased, dead = (int(value or 0) for value in reply)
            if ready or leased or dead:
                counts[name] = QueueCounts(ready=ready, leased=leased, dead=dead)
        return counts

    async def _queue_names(self) -> list[str]:
        with self._under_way():
            try:
                members = await self._pipeline.execute("SMEMBERS", self._key("queues"))
            except RedisError as error:
                raise StoreError(f"Redis failed: {error}") from error
        return sorted(member.decode() for member in members)

    def _key(self, name: str) -> str:
        return self._prefix + name

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._idle.wait()  # the operations under way finish (new ones are refused)
        await self._pipeline.close()
        await self._client.aclose()
