"""Fixtures for the observability module: a started module on an in-process host, stopped after the test."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from iii.modules.observability import ObservabilityModule, ObservabilitySettings
from tests.modules.conftest import RunModule
from tests.modules.local_host import LocalHost

StartObservability = Callable[..., Awaitable[tuple[ObservabilityModule, LocalHost]]]


@pytest.fixture
def start_observability(run_module: RunModule) -> StartObservability:
    """``module, host = await start_observability(logs_max_count=...)``: a started module on its own host."""

    async def start(**settings: Any) -> tuple[ObservabilityModule, LocalHost]:
        module = ObservabilityModule(ObservabilitySettings(**settings))
        return module, await run_module(module)

    return start
