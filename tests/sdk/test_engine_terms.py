"""Our SDK follows what the engine announced in ``workerregistered``: its channel close semantics.

The reference engine (Rust; it cannot be built here) ends every channel reader with a close frame that carries
no code, whether the stream was complete or not, and announces no features. This module stands in for it
with a minimal WebSocket peer that does exactly that on the wire: a worker socket that sends
``workerregistered`` (with or without this project's close-codes feature) and a channel socket that sends
data, then a bare close. It runs on a loop of its own, so the tests use the SDK's blocking calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections.abc import Callable, Iterator

import pytest
from websockets.asyncio.server import ServerConnection, serve

from iii import ChannelBrokenError, InitOptions, register_worker
from iii.protocol import close_codes

DATA = b"all of the stream"
REF = {"channel_id": "c1", "access_key": "k", "direction": "read"}


async def serve_like_the_reference(features: list[str] | None, port: asyncio.Future[int], stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set; ``port`` gets the listening port."""

    async def handler(connection: ServerConnection) -> None:
        assert connection.request is not None
        if connection.request.path.startswith("/ws/channels/"):
            await connection.send(DATA)
            connection.protocol.send_close()  # no code, no reason: received as 1005
            connection.send_data()
            await connection.wait_closed()
            return
        registered: dict[str, object] = {"type": "workerregistered", "worker_id": "w1", "reattach_token": "t"}
        if features is not None:
            registered["features"] = features
        await connection.send(json.dumps(registered))
        async for _ in connection:  # registrations and the like: nothing to answer
            pass

    async with serve(handler, "127.0.0.1", 0) as server:
        port.set_result(next(iter(server.sockets)).getsockname()[1])
        await stop.wait()


@pytest.fixture
def stand_in_engine() -> Iterator[Callable[[list[str] | None], str]]:
    """``url = stand_in_engine(features)``: a peer with the reference engine's wire behaviour, on a loop thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers: list[tuple[asyncio.Event, concurrent.futures.Future[None]]] = []

    def start(features: list[str] | None) -> str:
        async def listening() -> int:
            port: asyncio.Future[int] = loop.create_future()
            stop = asyncio.Event()
            serving = asyncio.run_coroutine_threadsafe(serve_like_the_reference(features, port, stop), loop)
            servers.append((stop, serving))
            return await port

        return f"ws://127.0.0.1:{asyncio.run_coroutine_threadsafe(listening(), loop).result(10)}"

    yield start
    for stop, serving in servers:
        loop.call_soon_threadsafe(stop.set)
        serving.result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_a_bare_close_ends_the_stream_when_the_engine_announced_nothing(
    stand_in_engine: Callable[[list[str] | None], str],
) -> None:
    """Against the reference engine, a reader returns what arrived (it raised ChannelBrokenError 1005 before)."""
    with register_worker(stand_in_engine(None), InitOptions(worker_name="terms")) as client:
        client.wait_until_connected(10)
        assert client.reader(REF).read_all() == DATA


def test_a_bare_close_breaks_the_stream_when_the_engine_promised_close_codes(
    stand_in_engine: Callable[[list[str] | None], str],
) -> None:
    """Against an engine that announced its close codes (ours), a bare close is a broken stream."""
    with register_worker(
        stand_in_engine([close_codes.STRICT_CLOSE_FEATURE]), InitOptions(worker_name="terms")
    ) as client:
        client.wait_until_connected(10)
        with pytest.raises(ChannelBrokenError) as broken:
            client.reader(REF).read_all()
        assert broken.value.code == close_codes.NO_STATUS
