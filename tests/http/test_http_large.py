"""A 1 GiB upload and a 1 GiB download through the http trigger, with the engine's memory bounded.

The engine runs in its own process so its resident memory can be read; its peak (``VmHWM``) may grow
by less than 64 MiB over the whole transfer, which the channels' backpressure makes possible.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from iii import III, HttpRequest, InitOptions, register_worker
from iii.testing import EngineProcess
from tests.http.conftest import bind, routes_ready
from tests.procfs import status_kib

GIB = 1024 * 1024 * 1024
BLOCK = 1024 * 1024
MEMORY_BUDGET = 64 * 1024 * 1024
BASE = os.urandom(BLOCK)


def block(index: int) -> bytes:
    """1 MiB blocks that differ from each other, so lost or reordered blocks change the hash."""
    return index.to_bytes(8, "big") + BASE[8:]


def expected_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for index in range(size // BLOCK):
        digest.update(block(index))
    return digest.hexdigest()


def peak_rss(pid: int) -> int:
    return status_kib(pid, "VmHWM") * 1024


@pytest.fixture(scope="module")
def large(shared_engine: EngineProcess) -> Iterator[tuple[EngineProcess, III]]:
    with register_worker(shared_engine.url, InitOptions(worker_name="large-bodies")) as client:

        async def store(data: dict[str, Any]) -> dict[str, Any]:
            digest = hashlib.sha256()
            size = 0
            async for chunk in HttpRequest.of(data).request_body:
                digest.update(chunk)
                size += len(chunk)
            return {"sha256": digest.hexdigest(), "bytes": size}

        async def fetch(data: dict[str, Any]) -> None:
            request = HttpRequest.of(data)
            size = int(request.path_params["size"])
            await request.response.headers({"Content-Type": "application/octet-stream"})
            for index in range(size // BLOCK):
                await request.response.write(block(index))
            await request.response.close_async()

        bind(client, "large.store", store, "PUT", "/store")
        bind(client, "large.fetch", fetch, "GET", "/fetch/:size")
        routes_ready(client)
        yield shared_engine, client


async def _warm_up(base: str) -> None:
    """Let the engine reach its steady size (buffers, imports) before its peak is taken as the baseline."""
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.put(f"{base}/store", data=_blocks(64 * BLOCK)) as response:
                assert response.status == 200
            async with http.get(f"{base}/fetch/{64 * BLOCK}") as response:
                assert len(await response.read()) == 64 * BLOCK


async def _blocks(size: int) -> AsyncIterator[bytes]:
    for index in range(size // BLOCK):
        yield block(index)


async def test_a_1_gib_upload_is_hashed_by_the_function_in_bounded_memory(
    large: tuple[EngineProcess, III],
) -> None:
    engine, _ = large
    await _warm_up(engine.http_url)
    before = peak_rss(engine.pid)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http,
        http.put(f"{engine.http_url}/store", data=_blocks(GIB)) as response,
    ):
        assert response.status == 200
        assert await response.json() == {"sha256": expected_sha256(GIB), "bytes": GIB}
    growth = peak_rss(engine.pid) - before
    assert growth < MEMORY_BUDGET, f"engine peak RSS grew by {growth / 2**20:.1f} MiB"


async def test_a_1_gib_download_streams_in_bounded_memory(large: tuple[EngineProcess, III]) -> None:
    engine, _ = large
    await _warm_up(engine.http_url)
    before = peak_rss(engine.pid)
    digest = hashlib.sha256()
    size = 0
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http,
        http.get(f"{engine.http_url}/fetch/{GIB}") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        async for chunk in response.content.iter_chunked(BLOCK):
            digest.update(chunk)
            size += len(chunk)
    assert (size, digest.hexdigest()) == (GIB, expected_sha256(GIB))
    growth = peak_rss(engine.pid) - before
    assert growth < MEMORY_BUDGET, f"engine peak RSS grew by {growth / 2**20:.1f} MiB"
