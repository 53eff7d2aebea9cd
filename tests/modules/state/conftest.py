"""Fixtures for the state module's tests: each backend-dependent test runs on SQLite and on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from iii.modules.state import StateModule, StateSettings
from iii.modules.state.module import open_store
from iii.modules.state.store import StateStore
from tests.modules.conftest import RunModule
from tests.modules.local_host import LocalHost

StartModule = Callable[..., Awaitable[tuple[StateModule, LocalHost]]]


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def settings_for(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., StateSettings]:
    """``settings_for(**overrides)``: settings for this test's backend (a fresh Redis, or a temporary dir)."""
    redis_url = request.getfixturevalue("redis_server").url if backend == "redis" else None

    def make(**overrides: Any) -> StateSettings:
        fields: dict[str, Any] = {"data_dir": tmp_path / "data", "backend": backend, "redis_url": redis_url}
        return StateSettings(**{**fields, **overrides})

    return make


@pytest.fixture
async def store(settings_for: Callable[..., StateSettings]) -> AsyncIterator[StateStore]:
    """An opened backend (closed after the test)."""
    opened = await open_store(settings_for())
    yield opened
    await opened.close()


@pytest.fixture
def start_module(settings_for: Callable[..., StateSettings], run_module: RunModule) -> StartModule:
    """``module, host = await start_module(**setting_overrides)``: a started StateModule on a LocalHost."""

    async def start(**overrides: Any) -> tuple[StateModule, LocalHost]:
        module = StateModule(settings_for(**overrides))
        return module, await run_module(module)

    return start


@pytest.fixture
async def state(start_module: StartModule) -> tuple[StateModule, LocalHost]:
    """One started module with default settings."""
    return await start_module()
