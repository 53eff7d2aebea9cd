"""Channels on the wire: data integrity, order, ends, keys, backpressure, expiry and failures."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from iii import ChannelBrokenError, register_worker
from iii.engine import Engine
from iii.protocol.refs import channel_url
from tests.engine.wire import RawWorker, connect_raw, eventually

StartEngine = Callable[..., Awaitable[Engine]]
FRAME = 64 * 1024


async def create_channel(engine: Engine, buffer_size: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Create a channel from a worker that stays connected (a departed creator takes unused channels along)."""
    worker = await RawWorker.connect(engine.url)
    refs = await worker.result_of("engine::channels::create", {"buffer_size": buffer_size})
    return refs["writer"], refs["reader"]


def url_of(engine: Engine, ref: dict[str, Any], direction: str | None = None) -> str:
    return channel_url(engine.url, ref["channel_id"], ref["access_key"], direction or ref["direction"])


async def write_all(ws: ClientConnection, data: bytes, messages: dict[int, str] | None = None) -> None:
    """Send ``data`` in 64 KiB binary frames (text ``messages`` before the frame with that index), then close."""
    messages = messages or {}
    for index, offset in enumerate(range(0, len(data), FRAME)):
        if index in messages:
            await ws.send(messages[index])
        await ws.send(data[offset : offset + FRAME])
    await ws.close()


async def read_all(ws: ClientConnection) -> tuple[bytes, list[str], int | None, str]:
    """Collect binary data and text messages until the engine closes; returns them with the close code."""
    chunks: list[bytes] = []
    texts: list[str] = []
    try:
        async for item in ws:
            if isinstance(item, bytes):
                chunks.append(item)
            else:
                texts.append(item)
    except websockets.ConnectionClosedError:
        pass
    close = ws.close_code, ws.close_reason or ""
    return b"".join(chunks), texts, close[0], close[1]


SIZES = [0, 1, 65535, 65536, 65537]
SIZE_CASES = [(size, True) for size in [*SIZES, 100 * 1024 * 1024]] + [(size, False) for size in SIZES]


@pytest.mark.parametrize(("size", "reader_first"), SIZE_CASES, ids=lambda v: str(v))
async def test_data_arrives_whole_and_the_end_is_clean(live_engine: Engine, size: int, reader_first: bool) -> None:
    data = os.urandom(size)
    writer_ref, reader_ref = await create_channel(live_engine)
    if reader_first:
        reader = await connect_raw(url_of(live_engine, reader_ref))
        writer = await connect_raw(url_of(live_engine, writer_ref))
    else:
        writer = await connect_raw(url_of(live_engine, writer_ref))
        reader = await connect_raw(url_of(live_engine, reader_ref))
    received, texts, code, _ = (await asyncio.gather(write_all(writer, data), read_all(reader)))[1]
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data).hexdigest()
    assert len(received) == size and texts == []
    assert code == 1000
    assert len(live_engine.channels) == 0  # finished channels are removed


async def test_frames_and_messages_are_buffered_in_order_until_the_reader_connects(live_engine: Engine) -> None:
    data = os.urandom(5 * FRAME + 10)
    writer_ref, reader_ref = await create_channel(live_engine)
    writer = await connect_raw(url_of(live_engine, writer_ref))
    await write_all(writer, data, messages={0: "start", 3: "middle", 5: "last"})
    reader = await connect_raw(url_of(live_engine, reader_ref))
    items = []
    async for item in reader:
        items.append(item)
    assert reader.close_code == 1000
    assert [i for i in items if isinstance(i, str)] == ["start", "middle", "last"]
    assert items.index("middle") == 4  # start, 3 frames, middle
    assert b"".join(i for i in items if isinstance(i, bytes)) == data


async def test_an_empty_stream_ends_at_once(live_engine: Engine) -> None:
    writer_ref, reader_ref = await create_channel(live_engine)
    writer = await connect_raw(url_of(live_engine, writer_ref))
    await writer.close()
    reader = await connect_raw(url_of(live_engine, reader_ref))
    assert await read_all(reader) == (b"", [], 1000, "stream complete")


async def test_unknown_channels_and_wrong_keys_get_404(live_engine: Engine) -> None:
    _, reader_ref = await create_channel(live_engine)
    bad = [
        {**reader_ref, "channel_id": "00000000-0000-0000-0000-000000000000"},
        {**reader_ref, "access_key": "not-the-key"},
    ]
    for ref in bad:
        with pytest.raises(websockets.InvalidStatus) as caught:
            await connect_raw(url_of(live_engine, ref))
        assert caught.value.response.status_code == 404
    with pytest.raises(websockets.InvalidStatus) as caught:
        await connect_raw(url_of(live_engine, reader_ref).replace("dir=read", "dir=sideways"))
    assert caught.value.response.status_code == 400


async def test_the_reader_key_cannot_write_and_the_writer_key_cannot_read(live_engine: Engine) -> None:
    writer_ref, reader_ref = await create_channel(live_engine)
    for ref, direction in ((reader_ref, "write"), (writer_ref, "read")):
        with pytest.raises(websockets.InvalidStatus) as caught:
            await connect_raw(url_of(live_engine, ref, direction))
        assert caught.value.response.status_code == 403
        assert b"opens the" in caught.value.response.body
    listing = live_engine.channels.describe()
    assert (listing[0]["writer"], listing[0]["reader"]) == ("waiting", "waiting")  # nothing was taken


async def test_each_end_is_taken_once(live_engine: Engine) -> None:
    writer_ref, reader_ref = await create_channel(live_engine)
    first = await connect_raw(url_of(live_engine, reader_ref))
    second = await connect_raw(url_of(live_engine, reader_ref))
    with pytest.raises(websockets.ConnectionClosed) as caught:
        await asyncio.wait_for(second.recv(), 5)
    assert caught.value.rcvd is not None
    assert caught.value.rcvd.code == 1008
    assert "already taken" in caught.value.rcvd.reason
    # The first reader is unaffected.
    writer = await connect_raw(url_of(live_engine, writer_ref))
    await write_all(writer, b"still mine")
    assert (await read_all(first))[0] == b"still mine"


async def test_keys_of_a_finished_channel_open_nothing(live_engine: Engine) -> None:
    writer_ref, reader_ref = await create_channel(live_engine)
    writer = await connect_raw(url_of(live_engine, writer_ref))
    reader = await connect_raw(url_of(live_engine, reader_ref))
    await asyncio.gather(write_all(writer, b"x"), read_all(reader))
    for ref in (writer_ref, reader_ref):
        with pytest.raises(websockets.InvalidStatus) as caught:
            await connect_raw(url_of(live_engine, ref))
        assert caught.value.response.status_code == 404


async def test_a_writer_that_aborts_with_an_error_code_does_not_end_the_stream_cleanly(live_engine: Engine) -> None:
    writer_ref, reader_ref = await create_channel(live_engine)
    writer = await connect_raw(url_of(live_engine, writer_ref))
    reader = await connect_raw(url_of(live_engine, reader_ref))
    await writer.send(b"partial")
    await writer.close(code=1011, reason="disk on fire")
    data, _, code, reason = await read_all(reader)
    assert data == b"partial"
    assert code == 4001
    assert "1011" in reason and "disk on fire" in reason


async def test_a_writer_killed_mid_stream_never_looks_like_a_clean_end(live_engine: Engine) -> None:
    writer_ref, reader_ref = await create_channel(live_engine)
    reader = await connect_raw(url_of(live_engine, reader_ref))
    script = (
        "import asyncio, sys, websockets\n"
        "async def main():\n"
        "    async with websockets.connect(sys.argv[1]) as ws:\n"
        "        while True:\n"
        "            await ws.send(b'x' * 65536)\n"
        "asyncio.run(main())\n"
    )
    writer = await asyncio.create_subprocess_exec(sys.executable, "-c", script, url_of(live_engine, writer_ref))
    try:
        first = await asyncio.wait_for(reader.recv(), 10)  # the writer is streaming
        assert isinstance(first, bytes)
        writer.kill()
        _, _, code, reason = await asyncio.wait_for(read_all(reader), 5)
    finally:
        if writer.returncode is None:
            writer.kill()
        await asyncio.wait_for(writer.wait(), 10)
    assert code == 4001
    assert "disconnected before ending the stream" in reason


async def test_a_vanished_reader_fails_the_writer(live_engine: Engine) -> None:
    writer_ref, reader_ref = await create_channel(live_engine)
    writer = await connect_raw(url_of(live_engine, writer_ref))
    reader = await connect_raw(url_of(live_engine, reader_ref))
    await writer.send(b"hello")
    assert await asyncio.wait_for(reader.recv(), 5) == b"hello"
    reader.transport.abort()
    with pytest.raises(websockets.ConnectionClosed) as caught:
        async with asyncio.timeout(5):
            while True:
                await writer.send(b"more")
                await asyncio.sleep(0.01)  # pace the writes; the close is what we wait for
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 4002
    assert len(live_engine.channels) == 0


@pytest.mark.parametrize("attempt", range(3))
async def test_a_writer_still_streaming_when_its_reader_leaves_gets_the_reason(
    live_engine: Engine, attempt: int
) -> None:
    # The engine closes the writer while its data is still arriving: it must read (and drop) that data until
    # the writer answers the close, or the writer's kernel may reset the connection and lose the reason
    # (seen with the HTTP trigger's response writers: tests/http, mid-download disconnect).
    writer_ref, reader_ref = await create_channel(live_engine)
    reader = await connect_raw(url_of(live_engine, reader_ref))
    client = await asyncio.to_thread(register_worker, live_engine.url)
    try:
        writer = client.writer(writer_ref)

        def stream() -> None:
            while True:
                writer.write(b"s" * 65536)

        streaming = asyncio.ensure_future(asyncio.to_thread(stream))
        for _ in range(20):  # the stream is flowing
            assert len(await asyncio.wait_for(reader.recv(), 5)) == 65536
        reader.transport.abort()
        with pytest.raises(ChannelBrokenError) as caught:
            await asyncio.wait_for(streaming, 10)
        assert caught.value.code == 4002
    finally:
        client.shutdown()


async def test_a_full_buffer_pushes_back_on_the_writer_and_loses_nothing(live_engine: Engine) -> None:
    data = os.urandom(300 * FRAME)
    writer_ref, reader_ref = await create_channel(live_engine, buffer_size=4)
    writer = await connect_raw(url_of(live_engine, writer_ref))
    writing = asyncio.ensure_future(write_all(writer, data))
    channel = next(iter(live_engine.channels))
    await eventually(lambda: channel.writer_paused, what="the writer is paused")
    assert not writing.done()  # the writer is held back by TCP
    assert len(channel.queue or ()) <= 4 + 2  # the buffer, plus frames already read in the same batch
    assert channel.queued_bytes <= 6 * FRAME
    reader = await connect_raw(url_of(live_engine, reader_ref))
    received, _, code, _ = await read_all(reader)
    await writing
    assert received == data and code == 1000
    assert live_engine.channels.stalls >= 1


async def test_ends_that_never_connect_expire_and_the_other_end_is_told(start_engine: StartEngine) -> None:
    engine = await start_engine(channel_ttl_s=0.3)
    lonely_writer_ref, _ = await create_channel(engine)
    _, lonely_reader_ref = await create_channel(engine)
    await create_channel(engine)  # neither end ever connects
    writer = await connect_raw(url_of(engine, lonely_writer_ref))
    reader = await connect_raw(url_of(engine, lonely_reader_ref))
    _, _, code, reason = await asyncio.wait_for(read_all(reader), 5)
    assert code == 4003 and "writer never connected" in reason
    with pytest.raises(websockets.ConnectionClosed) as caught:
        await asyncio.wait_for(writer.recv(), 5)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 4003
    await eventually(lambda: len(engine.channels) == 0, what="the untouched channel expired")


async def test_a_departed_creator_takes_its_never_connected_channels_along(live_engine: Engine) -> None:
    creator = await RawWorker.connect(live_engine.url)
    used = await creator.result_of("engine::channels::create", {})
    unused = await creator.result_of("engine::channels::create", {})
    writer = await connect_raw(url_of(live_engine, used["writer"]))
    await creator.close()
    await eventually(lambda: len(live_engine.channels) == 1, what="the unused channel went with its creator")
    with pytest.raises(websockets.InvalidStatus):
        await connect_raw(url_of(live_engine, unused["reader"]))
    reader = await connect_raw(url_of(live_engine, used["reader"]))
    await write_all(writer, b"kept")
    assert (await read_all(reader))[0] == b"kept"


async def test_idle_readers_are_read_and_their_pings_answered(live_engine: Engine) -> None:
    _, reader_ref = await create_channel(live_engine)
    reader = await connect_raw(url_of(live_engine, reader_ref))
    for _ in range(3):
        await asyncio.wait_for(await reader.ping(), 5)


async def test_engine_shutdown_cuts_streams_with_a_non_normal_code(start_engine: StartEngine) -> None:
    engine = await start_engine()
    writer_ref, reader_ref = await create_channel(engine)
    writer = await connect_raw(url_of(engine, writer_ref))
    reader = await connect_raw(url_of(engine, reader_ref))
    await writer.send(b"some")
    assert await asyncio.wait_for(reader.recv(), 5) == b"some"
    await engine.stop()
    _, _, code, reason = await asyncio.wait_for(read_all(reader), 5)
    assert code == 1012 and "shutting down" in reason


async def test_listing_counts_frames_and_bytes(live_engine: Engine) -> None:
    writer_ref, reader_ref = await create_channel(live_engine)
    writer = await connect_raw(url_of(live_engine, writer_ref))
    reader = await connect_raw(url_of(live_engine, reader_ref))
    await writer.send(b"abc")
    await writer.send("note")
    assert await asyncio.wait_for(reader.recv(), 5) == b"abc"
    assert await asyncio.wait_for(reader.recv(), 5) == "note"
    (entry,) = live_engine.channels.describe()
    assert (entry["writer"], entry["reader"], entry["frames"], entry["bytes"]) == ("open", "open", 2, 7)
