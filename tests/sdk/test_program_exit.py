"""A plain script that writes a stream, closes it and ends delivers the whole stream.

The SDK's loop runs in a daemon thread; without a flush at exit, the process ended with the data still in the
writer's backlog (the reader saw 4001), or before the writer connected at all (4003 after the channel's TTL).
"""

from __future__ import annotations

import hashlib
import queue
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from iii import III, InitOptions, register_worker
from iii.testing import EngineProcess

SCRIPT = """
import sys
from iii import register_worker, InitOptions
url, size = sys.argv[1], int(sys.argv[2])
client = register_worker(url, InitOptions(worker_name="short-script"))
channel = client.create_channel()
client.trigger({"function_id": "sink.digest", "payload": {"reader": channel.reader_ref.model_dump()},
                "action": {"type": "void"}})
data = bytes(i % 251 for i in range(size))
channel.writer.write(data)
channel.writer.close()
print("done", flush=True)
"""

ASYNC_SCRIPT = """
import asyncio, sys
from iii import register_worker, InitOptions
url, size = sys.argv[1], int(sys.argv[2])
client = register_worker(url, InitOptions(worker_name="short-async-script"))

async def main():
    channel = await client.create_channel_async()  # its ends live on this loop, which asyncio.run ends
    await client.trigger_async({"function_id": "sink.digest", "payload": {"reader": channel.reader_ref.model_dump()},
                                "action": {"type": "void"}})
    data = bytes(i % 251 for i in range(size))
    await channel.writer.write(data)
    channel.writer.close()  # not awaited: asyncio.run cancels the writer's task as main returns

asyncio.run(main())
print("done", flush=True)
"""


@pytest.fixture(scope="module")
def sink(shared_engine: EngineProcess) -> Iterator[tuple[III, queue.Queue[Any]]]:
    """A worker whose ``sink.digest`` reads a stream to its end and reports (sha256, length) or the error."""
    results: queue.Queue[Any] = queue.Queue()

    def digest(data: dict[str, Any]) -> None:
        try:
            raw = data["reader"].read_all()
            results.put((hashlib.sha256(raw).hexdigest(), len(raw)))
        except Exception as exc:
            results.put(exc)

    with register_worker(shared_engine.url, InitOptions(worker_name="sink")) as client:
        client.register_function("sink.digest", digest)
        assert client.register_function("sink.ready", lambda data: True).wait_active(10)
        yield client, results


@pytest.mark.parametrize("size", [1000, 4 * 1024 * 1024, 32 * 1024 * 1024], ids=["1000B", "4MiB", "32MiB"])
def test_a_script_that_ends_after_close_delivers_its_stream(
    shared_engine: EngineProcess, sink: tuple[III, queue.Queue[Any]], size: int
) -> None:
    _, results = sink
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, shared_engine.url, str(size)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "done"
    expected = bytes(i % 251 for i in range(size))
    outcome = results.get(timeout=60)
    assert outcome == (hashlib.sha256(expected).hexdigest(), size), outcome
    assert "not delivered" not in completed.stderr


@pytest.mark.parametrize("size", [1000, 4 * 1024 * 1024, 32 * 1024 * 1024], ids=["1000B", "4MiB", "32MiB"])
def test_an_asyncio_run_that_ends_after_close_delivers_its_stream(
    shared_engine: EngineProcess, sink: tuple[III, queue.Queue[Any]], size: int
) -> None:
    """The writer lives on the program's loop; ``asyncio.run`` cancels its pump as ``main`` returns, and the
    pump finishes sending what was written and closed before it lets the loop end."""
    _, results = sink
    completed = subprocess.run(
        [sys.executable, "-c", ASYNC_SCRIPT, shared_engine.url, str(size)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "done"
    expected = bytes(i % 251 for i in range(size))
    outcome = results.get(timeout=60)
    assert outcome == (hashlib.sha256(expected).hexdigest(), size), outcome
