"""Fixtures shared by the modules' tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.modules.http_functions.endpoints import Endpoints
from tests.modules.local_host import LocalHost

RunModule = Callable[[Any], Awaitable[LocalHost]]


@pytest.fixture
async def run_module() -> AsyncIterator[RunModule]:
    """``host = await run_module(module)``: start ``module`` on a fresh :class:`LocalHost`; every module started
    is stopped after the test, last first."""
    started: list[Any] = []

    async def run(module: Any) -> LocalHost:
        host = LocalHost()
        await module.start(host)
        started.append(module)
        return host

    yield run
    for module in reversed(started):
        await module.stop()


@pytest.fixture
async def endpoints() -> AsyncIterator[Endpoints]:
    """A real HTTP server on 127.0.0.1 with the endpoints the HTTP-invoked functions' tests call."""
    server = Endpoints()
    await server.start()
    yield server
    await server.stop()
