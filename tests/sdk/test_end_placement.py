"""Channel ends live on the loop that first uses them (docs/DESIGN.md, "Where SDK code runs").

An ``async def`` program drives its ends on its own loop: no thread hop per chunk, and its streams do not
depend on the SDK's loop thread. Before, every end lived on the SDK's loop, so one ``async def`` handler that
blocked that loop (a ``time.sleep`` by mistake) stalled every stream of the program.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from typing import Any

import pytest

from iii import InitOptions, UsageError, register_worker
from iii.testing import EngineProcess

PAYLOAD = bytes(i % 253 for i in range(1024 * 1024 + 17))


def test_a_programs_streams_do_not_wait_for_a_blocked_sdk_loop(engine: EngineProcess) -> None:
    blocked, release = threading.Event(), threading.Event()

    async def blocking_handler(data: Any) -> None:
        blocked.set()
        release.wait(60)  # blocks the SDK's loop, as a time.sleep in an async def handler would

    with register_worker(engine.url, InitOptions(worker_name="placement")) as client:
        assert client.register_function("placement.block", blocking_handler).wait_active(10)

        async def stream(channel: Any, reading: asyncio.Future[bytes]) -> bytes:
            await channel.writer.write(PAYLOAD)
            await channel.writer.close_async()
            return await reading

        async def main() -> bytes:
            channel = await client.create_channel_async()
            reading = asyncio.ensure_future(channel.reader.read_all())
            await channel.writer.write(b"x")  # first use: both ends now live on this loop
            client.trigger({"function_id": "placement.block", "payload": {}, "action": {"type": "void"}})
            assert await asyncio.to_thread(blocked.wait, 10), "the blocking handler did not start"
            return await asyncio.wait_for(stream(channel, reading), 10)

        try:
            received = asyncio.run(main())
        finally:
            release.set()
    assert hashlib.sha256(received).digest() == hashlib.sha256(b"x" + PAYLOAD).digest()


def test_an_end_used_after_its_loop_ended_raises_usage_error(engine: EngineProcess) -> None:
    with register_worker(engine.url, InitOptions(worker_name="placement-ended")) as client:
        channel = client.create_channel()

        async def first_use() -> None:
            await channel.writer.write(b"abc")

        asyncio.run(first_use())
        with pytest.raises(UsageError, match="event loop that first used it"):
            channel.writer.write(b"more")


def test_an_end_first_used_from_sync_code_serves_any_loop(engine: EngineProcess) -> None:
    """Sync first use puts the end on the SDK's loop, which outlives every asyncio.run."""
    with register_worker(engine.url, InitOptions(worker_name="placement-sync")) as client:
        channel = client.create_channel()
        channel.writer.write(b"sync;")

        async def more() -> None:
            await channel.writer.write(b"async;")
            await channel.writer.close_async()

        asyncio.run(more())
        assert channel.reader.read_all() == b"sync;async;"
