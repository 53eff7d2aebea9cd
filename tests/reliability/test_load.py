"""Load, bounded for CI: many channels at once, many workers, a million calls, slow readers against fast
writers; then the engine holds no more descriptors than before and its tables are empty.

The engine runs in its own process (``/proc`` tells its memory and descriptors). ``III_LOAD_SCALE`` (a
float, default 1) multiplies the sizes for a longer soak run by hand: ``III_LOAD_SCALE=10 pytest
tests/reliability/test_load.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import time
from collections.abc import Iterator
from typing import Any

import pytest

from iii import III, InitOptions, register_worker
from iii.protocol.refs import channel_url
from iii.testing import EngineProcess
from tests.engine.wire import RawWorker, connect_raw
from tests.procfs import open_fds, status_kib
from tests.reliability.lean import LeanWorker, call_many, serve_echo

SCALE = float(os.environ.get("III_LOAD_SCALE", "1"))
CHANNEL_BUDGET_BYTES = 1024 * 1024
MIB = 1024 * 1024
RSS_SLACK_KIB = 48 * 1024
"""How far above its idle size the engine may stay once a load is over (imports, caches, a warm heap)."""


def _scaled(count: int) -> int:
    return max(1, int(count * SCALE))


@pytest.fixture(scope="module")
def loaded() -> Iterator[EngineProcess]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 16_384) if hard != resource.RLIM_INFINITY else 16_384
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))  # the engine child inherits it
    args = ["--channel-buffer-bytes", str(CHANNEL_BUDGET_BYTES), "--memory-trim-interval-s", "0.5"]
    with EngineProcess(args) as engine:
        yield engine


@pytest.fixture(scope="module")
def baseline(loaded: EngineProcess) -> dict[str, int]:
    """The engine's descriptors and memory before any load."""
    return {"fds": open_fds(loaded.pid), "rss_kib": status_kib(loaded.pid, "VmRSS")}


@pytest.fixture(scope="module")
def client(loaded: EngineProcess, baseline: dict[str, int]) -> Iterator[III]:
    with register_worker(loaded.url, InitOptions(worker_name="load")) as worker:
        yield worker


async def test_a_thousand_channels_stream_at_once(client: III) -> None:
    count, size = _scaled(1000), 256 * 1024
    channels = [await client.create_channel_async() for _ in range(count)]

    async def one(index: int) -> str:
        channel = channels[index]
        data = index.to_bytes(4, "big") * (size // 4)

        async def write() -> None:
            await channel.writer.write(data)
            await channel.writer.close_async()

        writing = asyncio.ensure_future(write())
        received = await channel.reader.read_all()
        await writing
        assert received == data
        return hashlib.sha256(received).hexdigest()

    digests = await asyncio.gather(*(one(i) for i in range(count)))
    assert len(set(digests)) == count


async def test_five_hundred_workers_each_serve_a_call(loaded: EngineProcess, baseline: dict[str, int]) -> None:
    count = _scaled(500)
    workers = await asyncio.gather(*(RawWorker.connect(loaded.url) for _ in range(count)))
    for index, worker in enumerate(workers):
        await worker.send({"type": "registerfunction", "id": f"load.w{index}"})
    await asyncio.gather(*(worker.ping() for worker in workers))  # every registration handled
    caller = await RawWorker.connect(loaded.url)
    listing = await caller.result_of("engine::workers::list", {})
    assert len(listing["workers"]) >= count + 1
    calls = [await caller.invoke(f"load.w{index}", {"i": index}) for index in range(count)]
    served = await asyncio.gather(*(w.serve_one(lambda d: d["data"]["i"]) for w in workers))
    assert sorted(d["data"]["i"] for d in served) == list(range(count))
    results = {}
    for _ in calls:
        message = await caller.recv_type("invocationresult")
        results[message["invocation_id"]] = message["result"]
    assert [results[call_id] for call_id in calls] == list(range(count))
    await asyncio.gather(*(w.close() for w in [*workers, caller]))


async def test_a_million_invocations(loaded: EngineProcess) -> None:
    count = _scaled(1_000_000)
    host = await LeanWorker.connect(loaded.url)
    host.send(b'{"type":"registerfunction","id":"load.echo"}')
    serve_echo(host)
    caller = await LeanWorker.connect(loaded.url)
    started = time.monotonic()
    assert await asyncio.wait_for(call_many(caller, "load.echo", count, 64), 300) == count
    print(f"{count:,} invocations in {time.monotonic() - started:.1f} s")  # reported in docs/RELIABILITY.md
    host.close()
    caller.close()


async def test_slow_readers_hold_fast_writers_back_within_the_budgets(loaded: EngineProcess) -> None:
    count, size = _scaled(100), 16 * MIB
    creator = await RawWorker.connect(loaded.url)
    refs = [await creator.result_of("engine::channels::create", {}) for _ in range(count)]
    readers = [await connect_raw(channel_url(loaded.url, **ref["reader"]), max_queue=1) for ref in refs]
    writers = [await connect_raw(channel_url(loaded.url, **ref["writer"])) for ref in refs]
    before_kib = status_kib(loaded.pid, "VmRSS")
    block = b"w" * (64 * 1024)

    async def push(ws: Any) -> None:
        for _ in range(size // len(block)):
            await ws.send(block)
        await ws.close()

    pushing = [asyncio.ensure_future(push(ws)) for ws in writers]
    # The readers read nothing yet: every writer must end up held back by the engine.
    async with asyncio.timeout(60):
        while not all(c["writer_paused"] for c in await _channels(creator)):  # noqa: ASYNC110 - engine state
            await asyncio.sleep(0.05)
    held_kib = status_kib(loaded.pid, "VmRSS") - before_kib
    print(f"engine RSS while {count} writers are held back: +{held_kib / 1024:.1f} MiB")
    # Per channel: the reader socket's 1 MiB high-water mark, the channel budget, one read buffer.
    budget_kib = count * (1024 + CHANNEL_BUDGET_BYTES // 1024 + 512)
    assert held_kib < budget_kib, f"{held_kib} KiB > {budget_kib} KiB"
    assert not any(p.done() for p in pushing)  # nobody got through a full 16 MiB

    async def drain(ws: Any) -> int:
        received = 0
        async for message in ws:
            received += len(message)
        return received

    assert await asyncio.gather(*(drain(ws) for ws in readers)) == [size] * count
    await asyncio.gather(*pushing)
    await creator.close()


async def test_after_the_load_nothing_is_left_behind(loaded: EngineProcess, baseline: dict[str, int]) -> None:
    probe = await RawWorker.connect(loaded.url)
    await _until_idle(loaded, probe, baseline)
    fds_after = open_fds(loaded.pid)
    # The engine hands freed memory back every --memory-trim-interval-s (0.5 s here): its resident size
    # must come back to near where it started.
    settled_kib = baseline["rss_kib"] + RSS_SLACK_KIB
    async with asyncio.timeout(15):
        while status_kib(loaded.pid, "VmRSS") > settled_kib:  # noqa: ASYNC110 - /proc has no event
            await asyncio.sleep(0.1)
    print(
        f"engine after the load: {fds_after} fds ({baseline['fds']} before; 2 test sockets still open), "
        f"RSS {status_kib(loaded.pid, 'VmRSS') / 1024:.1f} MiB ({baseline['rss_kib'] / 1024:.1f} before)"
    )
    assert fds_after <= baseline["fds"] + 2
    await probe.close()


async def _until_idle(engine: EngineProcess, probe: RawWorker, baseline: dict[str, int]) -> None:
    """Wait until only the probe and the SDK client remain and every load socket is closed."""
    async with asyncio.timeout(30):  # disconnects are processed on the engine's own schedule
        while True:
            workers = (await probe.result_of("engine::workers::list", {}))["workers"]
            if len(workers) <= 2 and not await _channels(probe) and open_fds(engine.pid) <= baseline["fds"] + 2:
                return
            await asyncio.sleep(0.05)


async def _channels(worker: RawWorker) -> list[dict[str, Any]]:
    channels: list[dict[str, Any]] = (await worker.result_of("engine::channels::list", {}))["channels"]
    return channels
