"""Fixtures for the cron module: a fake clock, and started modules on in-process hosts, stopped after the test."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from iii.modules.cron import Clock, CronModule, CronSettings
from tests.modules.conftest import RunModule
from tests.modules.cron.fake_clock import FakeClock
from tests.modules.local_host import LocalHost

START = datetime(2030, 1, 1, 0, 0, 0, tzinfo=UTC)
"""The fake clock's first moment (a Tuesday)."""

StartCron = Callable[..., Awaitable[tuple[CronModule, LocalHost]]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def start_cron(clock: FakeClock, run_module: RunModule) -> StartCron:
    """``module, host = await start_cron(redis_url=...)``: a started module on its own host, on ``clock``."""

    async def start(*, module_clock: Clock | None = None, **settings: Any) -> tuple[CronModule, LocalHost]:
        module = CronModule(CronSettings(**settings), clock=module_clock or clock)
        return module, await run_module(module)

    return start
