"""Fixtures shared by the modules' tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

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
