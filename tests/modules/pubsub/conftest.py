"""Fixtures for the pub/sub module: started modules on in-process hosts, stopped after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from iii.modules.pubsub import PubSubModule, PubSubSettings
from tests.modules.local_host import LocalHost

StartPubSub = Callable[..., Awaitable[tuple[PubSubModule, LocalHost]]]


@pytest.fixture
async def start_pubsub() -> AsyncIterator[StartPubSub]:
    """``module, host = await start_pubsub(redis_url=..., queue_size=...)``: a started module on its own host."""
    started: list[PubSubModule] = []

    async def start(**settings: Any) -> tuple[PubSubModule, LocalHost]:
        module = PubSubModule(PubSubSettings(**settings))
        host = LocalHost()
        await module.start(host)
        started.append(module)
        return module, host

    yield start
    for module in started:
        await module.stop()
