"""``--http-timeout-s`` bounds silence, never a transfer: uploads and downloads that keep moving may take any
time, while a function that does not answer once it has the whole request, or a request body that stops
moving, gets 504 after the timeout.

The engine runs with a 1 s timeout. Transfers here are paced to outlast it: each step waits for the other
side (the function has read the chunk, the client has the bytes) and then pauses for a quarter of the
timeout, so the elapsed time, which is what is tested, exceeds the timeout while the exchange never stands
still for long (the margin is for a busy machine).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from iii import III, ChannelBrokenError, HttpRequest, InitOptions, register_worker
from iii.testing import EngineProcess
from tests.http.conftest import bind, routes_ready

TIMEOUT_S = 1.0
PAUSE_S = 0.25
"""The pause between two steps of a paced transfer: well under the timeout."""
STEPS = 6
"""Steps of a paced transfer: STEPS * PAUSE_S = 1.5 timeouts."""
CHUNK = 64 * 1024
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=60)


class Slow:
    """A worker whose handlers report their progress to the test, and wait for its go-ahead."""

    def __init__(self, engine: EngineProcess) -> None:
        self.url = engine.http_url
        self.engine = engine
        self.progress: queue.Queue[Any] = queue.Queue()
        self.go: queue.Queue[str] = queue.Queue()
        self.released = threading.Event()

    async def next_progress(self) -> Any:
        return await asyncio.to_thread(self.progress.get, timeout=30)


@pytest.fixture(scope="module")
def slow() -> Iterator[Slow]:
    with EngineProcess(args=["--http-timeout-s", str(TIMEOUT_S)]) as engine:
        s = Slow(engine)
        with register_worker(engine.url, InitOptions(worker_name="slow-http")) as client:
            _bind_handlers(client, s)
            routes_ready(client)
            yield s
            s.released.set()


def _bind_handlers(client: III, s: Slow) -> None:
    async def count(data: dict[str, Any]) -> dict[str, Any]:
        size = 0
        async for chunk in HttpRequest.of(data).request_body:
            size += len(chunk)
            s.progress.put(size)
        return {"bytes": size}

    def silent(data: dict[str, Any]) -> None:
        try:
            size = len(HttpRequest.of(data).request_body.read_all())
        except ChannelBrokenError as exc:
            s.progress.put(exc)
            return
        s.progress.put(size)
        s.released.wait(60)  # never answers while the test runs

    def trickle(data: dict[str, Any]) -> None:
        response = HttpRequest.of(data).response
        response.headers({"Content-Type": "application/octet-stream"})
        for _ in range(STEPS):
            response.write(b"d" * CHUNK)
            s.go.get(timeout=30)  # the client has this chunk
        response.close()

    bind(client, "slow.count", count, "PUT", "/count")
    bind(client, "slow.silent", silent, "PUT", "/silent")
    bind(client, "slow.trickle", trickle, "GET", "/trickle")


async def test_an_upload_that_keeps_moving_outlasts_the_timeout(slow: Slow) -> None:
    async def paced() -> AsyncIterator[bytes]:
        for step in range(STEPS):
            yield b"u" * CHUNK
            assert await slow.next_progress() == (step + 1) * CHUNK  # the function has read it
            await asyncio.sleep(PAUSE_S)

    started = time.monotonic()
    async with (
        aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http,
        http.put(f"{slow.url}/count", data=paced()) as response,
    ):
        assert (response.status, await response.json()) == (200, {"bytes": STEPS * CHUNK})
    assert time.monotonic() - started > 1.4 * TIMEOUT_S


async def test_a_function_that_does_not_answer_once_it_has_the_whole_body_gets_a_504(slow: Slow) -> None:
    sent_all = 0.0

    async def paced() -> AsyncIterator[bytes]:
        nonlocal sent_all
        for _ in range(STEPS):
            yield b"s" * CHUNK
            await asyncio.sleep(PAUSE_S)
        sent_all = time.monotonic()

    async with (
        aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http,
        http.put(f"{slow.url}/silent", data=paced()) as response,
    ):
        assert response.status == 504
        error = (await response.json())["error"]
    assert sent_all and time.monotonic() - sent_all >= TIMEOUT_S  # the clock started with the complete body
    assert error["code"] == "TIMEOUT" and "slow.silent" in error["message"]
    assert await slow.next_progress() == STEPS * CHUNK


async def test_a_request_body_that_stops_moving_gets_a_504_and_breaks_the_function_s_reader(slow: Slow) -> None:
    host, port = slow.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    # Taken before the write: the engine may read the bytes, and start its clock, before this process runs again.
    stalled = time.monotonic()
    writer.write(b"PUT /silent HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"p" * 1000)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)  # the rest of the body never comes
    assert time.monotonic() - stalled >= TIMEOUT_S
    assert head.startswith(b"HTTP/1.1 504")
    writer.close()
    broken = await slow.next_progress()
    assert isinstance(broken, ChannelBrokenError)


async def test_a_download_that_keeps_moving_outlasts_the_timeout(slow: Slow) -> None:
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http, http.get(f"{slow.url}/trickle") as response:
        assert response.status == 200
        for _ in range(STEPS):
            assert await response.content.readexactly(CHUNK) == b"d" * CHUNK
            await asyncio.sleep(PAUSE_S)
            slow.go.put("next")
        assert await response.read() == b""  # a clean end, not a cut
    assert time.monotonic() - started > 1.4 * TIMEOUT_S
