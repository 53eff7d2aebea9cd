"""Fixtures for the pub/sub module: started modules on in-process hosts, stopped after the test."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from iii.modules.pubsub import PubSubModule, PubSubSettings
from tests.modules.conftest import RunModule
from tests.modules.local_host import LocalHost

StartPubSub = Callable[..., Awaitable[tuple[PubSubModule, LocalHost]]]


@pytest.fixture
def start_pubsub(run_module: RunModule) -> StartPubSub:
    """``module, host = await start_pubsub(redis_url=..., queue_size=...)``: a started module on its own host."""

    async def start(**settings: Any) -> tuple[PubSubModule, LocalHost]:
        module = PubSubModule(PubSubSettings(**settings))
        return module, await run_module(module)

    return start
