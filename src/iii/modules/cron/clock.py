"""Time for the scheduler, injectable: tests drive a fake clock instead of waiting for real seconds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware, in UTC."""

    async def sleep_until(self, moment: datetime) -> None:
        """Return once ``now() >= moment`` (at once if it already is)."""


class SystemClock:
    """The machine's clock. Sleeps again when the loop wakes it early, so ``now() >= moment`` on return."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, moment: datetime) -> None:
        # The loop's timers may fire a little early: sleep again until the moment has really come.
        while (remaining := (moment - self.now()).total_seconds()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)
