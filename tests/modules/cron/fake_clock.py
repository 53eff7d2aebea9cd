"""A clock that moves only when the test says so, and tells the test when schedulers wait on it."""

from __future__ import annotations

import asyncio
from datetime import datetime


class FakeClock:
    """Implements :class:`iii.modules.cron.Clock`. ``set(moment)`` moves time and wakes those due."""

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []
        self._changed = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    async def sleep_until(self, moment: datetime) -> None:
        if moment <= self._now:
            return
        future = asyncio.get_running_loop().create_future()
        entry = (moment, future)
        self._sleepers.append(entry)
        self._changed.set()
        try:
            await future
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    def set(self, moment: datetime) -> None:
        """Move time to ``moment`` and wake every sleeper whose moment has come."""
        self._now = moment
        for entry in list(self._sleepers):
            if entry[0] <= moment:
                self._sleepers.remove(entry)
                if not entry[1].done():
                    entry[1].set_result(None)

    def waiting(self) -> list[datetime]:
        """The moments schedulers wait for, sorted."""
        return sorted(moment for moment, future in self._sleepers if not future.done())

    async def wait_for_sleepers(self, count: int, timeout_s: float = 5.0) -> list[datetime]:
        """Wait until ``count`` schedulers wait for a moment still to come (they are done with the past)."""
        async with asyncio.timeout(timeout_s):
            while len(self.waiting()) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.waiting()
