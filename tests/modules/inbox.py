"""A function for module tests that records the payloads it is called with and lets a test wait for them."""

from __future__ import annotations

import asyncio
from typing import Any


class Inbox:
    """A function's received payloads; ``await inbox.wait(n)`` until it has ``n`` of them."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self._changed = asyncio.Event()

    def __call__(self, data: Any) -> dict[str, Any]:
        self.received.append(data)
        self._changed.set()
        return {}

    async def wait(self, count: int, timeout_s: float = 5.0) -> list[Any]:
        async with asyncio.timeout(timeout_s):
            while len(self.received) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.received
