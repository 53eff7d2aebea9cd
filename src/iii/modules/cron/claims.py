"""Who fires a tick: the first to claim it. In this process, or across engines on Redis.

A job is identified by what it does, not by its binding (binding ids differ per worker connection and per
engine): its function, its normalized expression and its condition function (:func:`job_key`). Every binding
of one job, on any engine sharing the claims, tries to claim each tick; one succeeds and fires.

Each claim also records the job's last fired tick, so a job bound again can say which ticks no one ran.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from iii.modules.redis_urls import redacted

CONNECT_TIMEOUT_S = 5.0
LAST_FIRE_TTL_MS = 7 * 24 * 3600 * 1000
"""How long Redis remembers a job's last fire (for the "ticks not run" message)."""

# KEYS: the tick's lock, the job's last fire. ARGV: owner, lock ttl ms, tick ms, last-fire ttl ms.
# The lock is SET NX PX; the last fire only moves forward.
_CLAIM_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    local last = tonumber(redis.call('GET', KEYS[2]) or '-1')
    if last < tonumber(ARGV[3]) then
        redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
    end
    return 1
end
return 0
"""


def job_key(function_id: str, expression: str, condition_function_id: str | None) -> str:
    """The same job's key on every engine: a digest of what it does."""
    identity = "\n".join([function_id, expression, condition_function_id or ""])
    return hashlib.sha256(identity.encode()).hexdigest()[:24]


class ClaimError(Exception):
    """The claim could not be decided (Redis unreachable): the tick is not fired here."""


class TickClaims(Protocol):
    async def start(self) -> None:
        """Connect; raises ClaimError when the backend cannot be reached."""

    async def claim(self, job: str, tick: datetime) -> bool:
        """True for the one caller that fires ``tick`` of ``job``; raises ClaimError."""

    async def last_fire(self, job: str) -> datetime | None:
        """The latest tick of ``job`` that was claimed, if known; raises ClaimError."""

    def describe(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class LocalClaims:
    """Claims in this process: one fire per tick among the bindings of a job on this engine."""

    def __init__(self) -> None:
        self._latest: dict[str, datetime] = {}

    async def start(self) -> None:
        pass

    async def claim(self, job: str, tick: datetime) -> bool:
        latest = self._latest.get(job)
        if latest is not None and tick <= latest:
            return False
        self._latest[job] = tick
        return True

    async def last_fire(self, job: str) -> datetime | None:
        return self._latest.get(job)

    def describe(self) -> dict[str, Any]:
        return {"backend": "local"}

    async def close(self) -> None:
        pass


class RedisClaims:
    """Claims on Redis: a key per job and tick, ``SET NX PX``, shared by every engine on that Redis.

    The lock lives ``lock_ttl_s``: longer than the clocks of the engines may disagree, so that a late engine
    still finds the tick taken.
    """

    def __init__(self, url: str, *, key_prefix: str, lock_ttl_s: float) -> None:
        self._url = url
        self._prefix = key_prefix
        self._lock_ttl_ms = max(1, round(lock_ttl_s * 1000))
        self._owner = uuid.uuid4().hex
        self._client: aioredis.Redis | None = None

    async def start(self) -> None:
        self._client = aioredis.Redis.from_url(self._url, socket_connect_timeout=CONNECT_TIMEOUT_S)
        try:
            await self._client.ping()
        except (RedisError, OSError) as error:
            await self.close()
            raise ClaimError(f"cron: cannot reach Redis at {redacted(self._url)}: {error}") from error

    async def claim(self, job: str, tick: datetime) -> bool:
        assert self._client is not None, "claim before start"
        tick_ms = _ms(tick)
        keys = [f"{self._prefix}tick:{job}:{tick_ms}", f"{self._prefix}last:{job}"]
        arguments: list[str | int] = [self._owner, self._lock_ttl_ms, tick_ms, LAST_FIRE_TTL_MS]
        try:
            won = await self._client.eval(_CLAIM_SCRIPT, len(keys), *keys, *arguments)
        except (RedisError, OSError) as error:
            raise ClaimError(f"Redis at {redacted(self._url)} did not answer: {error}") from error
        return bool(won)

    async def last_fire(self, job: str) -> datetime | None:
        assert self._client is not None, "last_fire before start"
        try:
            value = await self._client.get(f"{self._prefix}last:{job}")
        except (RedisError, OSError) as error:
            raise ClaimError(f"Redis at {redacted(self._url)} did not answer: {error}") from error
        if value is None:
            return None
        return datetime.fromtimestamp(int(value) / 1000, UTC)

    def describe(self) -> dict[str, Any]:
        return {"backend": "redis", "redis_url": redacted(self._url)}

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._client.aclose()
            self._client = None


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)
