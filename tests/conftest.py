"""Fixtures shared by every test: a real engine in a child process on an ephemeral loopback port."""

from __future__ import annotations

import asyncio
import io
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from iii.engine import Engine, EngineConfig
from iii.testing import EngineProcess
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
"""Throwaway environments (official SDKs from PyPI and npm) live here; it is git-ignored."""


@pytest.fixture
def engine() -> Iterator[EngineProcess]:
    """A fresh engine for one test; stopped (SIGTERM) afterwards."""
    with EngineProcess() as process:
        yield process


@pytest.fixture(scope="module")
def shared_engine() -> Iterator[EngineProcess]:
    """One engine for a whole test module, for tests that do not change engine-wide state."""
    with EngineProcess() as process:
        yield process


@pytest.fixture
async def start_engine() -> AsyncIterator[Callable[..., Awaitable[Engine]]]:
    """Start engines inside the test's event loop: ``engine = await start_engine(channel_ttl_s=1)``.

    A real engine on an ephemeral loopback port, in this process so tests can inspect its state.
    Every engine started is stopped after the test.
    """
    engines: list[Engine] = []
    data_dirs: list[tempfile.TemporaryDirectory[str]] = []

    async def start(**overrides: Any) -> Engine:
        if "data_dir" not in overrides:  # the modules' files go to a directory of this engine alone
            data_dirs.append(tempfile.TemporaryDirectory(prefix="iii-engine-data-"))
            overrides["data_dir"] = data_dirs[-1].name
        engine = Engine(EngineConfig(**{"port": 0, "http_port": 0, "stream_port": 0, **overrides}))
        await engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        try:
            await asyncio.wait_for(engine.stop(), ENGINE_STOP_TIMEOUT_S)
        except TimeoutError:
            stacks = "\n".join(_task_stack(task) for task in asyncio.all_tasks())
            pytest.fail(f"the engine did not stop within {ENGINE_STOP_TIMEOUT_S} s; its tasks:\n{stacks}")
    for directory in data_dirs:
        directory.cleanup()


@pytest.fixture
async def live_engine(start_engine: Callable[..., Awaitable[Engine]]) -> Engine:
    """An in-process engine with the default configuration."""
    return await start_engine()


def pytest_configure(config: pytest.Config) -> None:
    # A test run started as a background job of a non-interactive shell inherits SIGINT ignored, and so would
    # every process the tests start: the Ctrl-C tests could not interrupt them. A program started from a
    # terminal has SIGINT's default; the tests' children get the same (exec resets a handled signal).
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


ENGINE_STOP_TIMEOUT_S = 30.0


def _task_stack(task: asyncio.Task[Any]) -> str:
    out = io.StringIO()
    task.print_stack(file=out)
    return out.getvalue()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real, empty Redis on a free loopback port for one test (``redis_server.url``)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def core_engine(start_engine: Callable[..., Awaitable[Engine]]) -> Engine:
    """An in-process engine that runs no modules: the core alone (listings hold only what a test registers)."""
    return await start_engine(modules="")
