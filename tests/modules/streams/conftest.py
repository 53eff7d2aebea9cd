"""Fixtures for the streams module's tests: each backend-dependent test runs on SQLite and on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from iii.modules.streams import StreamsModule, StreamsSettings
from iii.modules.streams.store import StreamStore, open_stream_store
from tests.modules.conftest import RunModule
from tests.modules.local_host import LocalHost

StartModule = Callable[..., Awaitable[tuple[StreamsModule, LocalHost]]]


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def settings_for(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., StreamsSettings]:
    """``settings_for(**overrides)``: settings for this test's backend (a fresh Redis, or a temporary dir)."""
    redis_url = request.getfixturevalue("redis_server").url if backend == "redis" else None

    def make(**overrides: Any) -> StreamsSettings:
        fields: dict[str, Any] = {"data_dir": tmp_path / "data", "backend": backend, "redis_url": redis_url}
        return StreamsSettings(**{**fields, **overrides})

    return make


@pytest.fixture
async def store(settings_for: Callable[..., StreamsSettings]) -> AsyncIterator[StreamStore]:
    """An opened store (closed after the test)."""
    opened = await open_stream_store(settings_for())
    yield opened
    await opened.close()


@pytest.fixture
def start_module(settings_for: Callable[..., StreamsSettings], run_module: RunModule) -> StartModule:
    """``module, host = await start_module(**setting_overrides)``: a started StreamsModule on a LocalHost."""

    async def start(**overrides: Any) -> tuple[StreamsModule, LocalHost]:
        module = StreamsModule(settings_for(**overrides))
        return module, await run_module(module)

    return start


@pytest.fixture
async def streams(start_module: StartModule) -> tuple[StreamsModule, LocalHost]:
    """One started module with default settings."""
    return await start_module()
