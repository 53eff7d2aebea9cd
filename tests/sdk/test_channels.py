"""Our SDK's channel ends against a real engine: integrity, order, both API styles, misuse and breaks."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from iii import (
    III,
    ChannelBrokenError,
    ChannelReader,
    ChannelWriter,
    InitOptions,
    StreamChannelRef,
    UsageError,
    register_worker,
)
from iii.helpers import extract_channel_refs
from iii.testing import EngineProcess


@pytest.fixture(scope="module")
def client(shared_engine: EngineProcess) -> Iterator[III]:
    with register_worker(shared_engine.url, InitOptions(worker_name="channel-tests")) as worker:
        yield worker


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 100 * 1024 * 1024])
def test_sync_code_streams_any_size_intact(client: III, size: int) -> None:
    data = os.urandom(size)
    channel = client.create_channel()
    received: dict[str, bytes] = {}
    reading = threading.Thread(target=lambda: received.setdefault("data", channel.reader.read_all()))
    reading.start()
    assert channel.writer.write(data) is None  # blocks until written, returns nothing
    assert channel.writer.close() is None  # fire-and-forget
    reading.join(60)
    assert sha(received["data"]) == sha(data)


def test_async_code_streams_with_awaits(client: III) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)

    async def main() -> tuple[bytes, list[bytes]]:
        channel = await client.create_channel_async()
        second = await client.create_channel(buffer_size=4)  # the plain method is awaitable here
        writing = asyncio.ensure_future(_write_in_chunks(channel.writer, data))
        received = await channel.reader.read_all()
        await writing
        await second.writer.write(b"a")
        await second.writer.write(b"b")
        await second.writer.close_async()
        chunks = [chunk async for chunk in second.reader]
        return received, chunks

    received, chunks = asyncio.run(main())
    assert sha(received) == sha(data)
    assert chunks == [b"a", b"b"]


async def _write_in_chunks(writer: ChannelWriter, data: bytes) -> None:
    for offset in range(0, len(data), 100_000):
        await writer.write(data[offset : offset + 100_000])
    await writer.close_async()


def test_messages_reach_on_message_in_stream_order(client: III) -> None:
    channel = client.create_channel()
    events: list[Any] = []
    channel.reader.on_message(lambda text: events.append(("text", text)))
    channel.writer.send_message("begin")
    channel.writer.write(b"x" * 10)
    channel.writer.send_message("middle")
    channel.writer.stream.write(b"y" * 10)
    channel.writer.stream.end(b"z")

    async def collect() -> None:
        async for chunk in channel.reader:
            events.append(("data", chunk))

    asyncio.run(collect())
    assert events == [("text", "begin"), ("data", b"x" * 10), ("text", "middle"), ("data", b"y" * 10), ("data", b"z")]


def test_an_empty_stream_ends_at_once(client: III) -> None:
    channel = client.create_channel()
    channel.writer.close()
    assert channel.reader.read_all() == b""


def test_misuse_raises_usage_errors(client: III) -> None:
    channel = client.create_channel()
    channel.writer.write(b"once")
    channel.writer.close()
    with pytest.raises(UsageError):
        channel.writer.write(b"again")
    with pytest.raises(UsageError):
        channel.writer.send_message("late")
    assert channel.reader.read_all() == b"once"
    with pytest.raises(UsageError):
        channel.reader.read_all()
    with pytest.raises(UsageError):
        aiter(channel.reader)
    with pytest.raises(UsageError):
        client.reader(channel.writer_ref)  # a writer ref cannot make a reader


def test_refs_anywhere_in_a_payload_become_live_ends(client: III) -> None:
    seen: dict[str, Any] = {}

    def inspect_payload(data: dict[str, Any]) -> str:
        seen["items"] = data["items"]
        seen["pair"] = data["pair"]
        reader = data["items"][0]["source"]
        writer = data["pair"][1]
        writer.write(reader.read_all().upper())
        writer.close()
        return "done"

    client.register_function("refs.inspect", inspect_payload)
    source, sink = client.create_channel(), client.create_channel()
    source.writer.write(b"nested refs")
    source.writer.close()
    payload = {"items": [{"source": source.reader_ref}], "pair": ("label", sink.writer_ref.model_dump())}
    found = extract_channel_refs({"a": [source.reader_ref.model_dump()]})
    assert found == [("a[0]", StreamChannelRef.model_validate(source.reader_ref.model_dump()))]
    assert client.trigger({"function_id": "refs.inspect", "payload": payload}) == "done"
    assert isinstance(seen["items"][0]["source"], ChannelReader)
    assert isinstance(seen["pair"][1], ChannelWriter) and seen["pair"][0] == "label"
    assert sink.reader.read_all() == b"NESTED REFS"


WRITER_THAT_DIES = """
import os, sys
from iii import register_worker
worker = register_worker(sys.argv[1])
writer = worker.writer({"channel_id": sys.argv[2], "access_key": sys.argv[3], "direction": "write"})
writer.write(b"x" * 3_000_000)  # more than the writer's backlog holds: returns once most of it is sent
print("WROTE", flush=True)
sys.stdin.readline()
os._exit(1)  # dies without closing the stream
"""


def test_a_writer_that_dies_mid_stream_breaks_the_reader(client: III) -> None:
    channel = client.create_channel()
    ref = channel.writer_ref
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER_THAT_DIES, client.address, ref.channel_id, ref.access_key],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "WROTE"
        writer.stdin.write("die\n")
        writer.stdin.flush()
        with pytest.raises(ChannelBrokenError) as caught:
            channel.reader.read_all()
    finally:
        writer.kill()
        writer.wait(10)
    assert caught.value.code == 4001
    assert 0 < caught.value.received <= 3_000_000  # whatever arrived, the stream is reported broken


def test_a_reader_that_leaves_breaks_the_writer(client: III) -> None:
    channel = client.create_channel()
    channel.writer.write(b"first")

    async def read_one_then_leave() -> bytes:
        async for chunk in channel.reader:
            await channel.reader.close_async()
            return chunk
        raise AssertionError("no data")

    assert asyncio.run(read_one_then_leave()) == b"first"
    deadline = time.monotonic() + 10
    with pytest.raises(ChannelBrokenError) as caught:
        while time.monotonic() < deadline:  # the break arrives asynchronously; a write after it raises
            channel.writer.write(b"more" * 1000)
    assert caught.value.code == 4002


def test_shutdown_lets_fire_and_forget_calls_finish(shared_engine: EngineProcess, client: III) -> None:
    leaving = register_worker(shared_engine.url, InitOptions(worker_name="leaving"))
    channel = leaving.create_channel(buffer_size=1024)
    channel.writer.write(b"last words")
    notes = [f"{index:04d}" + "n" * 8000 for index in range(200)]
    for note in notes:  # fire-and-forget, backpressured inside the SDK: still going when shutdown starts
        channel.writer.send_message(note)
    channel.writer.close()
    reader = client.reader(channel.reader_ref)
    texts: list[str] = []
    reader.on_message(texts.append)
    reading = threading.Thread(target=lambda: texts.append(reader.read_all().decode()))
    reading.start()
    leaving.shutdown()
    reading.join(30)
    assert texts == [*notes, "last words"]  # every message, the data, and a clean end: nothing cut off


def test_closing_a_broken_writer_raises_instead_of_waiting(client: III) -> None:
    channel = client.create_channel()
    channel.writer.write(b"first")

    async def leave() -> None:
        async for _ in channel.reader:
            await channel.reader.close_async()
            return

    asyncio.run(leave())
    deadline = time.monotonic() + 10
    with pytest.raises(ChannelBrokenError):
        while time.monotonic() < deadline:  # the break arrives asynchronously
            channel.writer.write(b"more")

    async def close_it() -> None:
        await asyncio.wait_for(channel.writer.close_async(), 5)

    with pytest.raises(ChannelBrokenError):
        asyncio.run(close_it())
