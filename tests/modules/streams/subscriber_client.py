"""Clients of the stream module's subscription port, for its tests: a `websockets` subscriber that reads JSON
messages, and a bare TCP one that upgrades and then reads only when told to (a stalled subscriber)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from iii.engine import Engine
from iii.modules.streams import StreamsModule
from tests.engine.wire import RawWorker

TIMEOUT_S = 10.0


def stream_module(engine: Engine) -> StreamsModule:
    """The running stream module of an in-process engine."""
    found = [module for module in engine.modules.modules if isinstance(module, StreamsModule)]
    assert found, "the engine runs no stream module"
    return found[0]


def join(subscription_id: str, stream_name: str, group_id: str, item_id: str | None = None) -> str:
    data: dict[str, Any] = {"subscriptionId": subscription_id, "streamName": stream_name, "groupId": group_id}
    if item_id is not None:
        data["id"] = item_id
    return json.dumps({"type": "join", "data": data})


def leave(subscription_id: str, stream_name: str, group_id: str, item_id: str | None = None) -> str:
    message = json.loads(join(subscription_id, stream_name, group_id, item_id))
    message["type"] = "leave"
    return json.dumps(message)


class Subscriber:
    """A subscriber's socket; :meth:`recv` is its next message, decoded."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, url: str, **options: Any) -> Subscriber:
        return cls(await websockets.connect(url, open_timeout=TIMEOUT_S, max_size=None, **options))

    async def send(self, text: str | bytes) -> None:
        await self.ws.send(text)

    async def recv(self, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout_s))
        return value

    async def event(self, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
        """The next message's ``event``, with its ``id`` (the shape checks of the wrapper done here)."""
        message = await self.recv(timeout_s)
        assert message["type"] == "stream" and isinstance(message["timestamp"], int), message
        return {"id": message["id"], **message["event"]}

    async def closed(self, timeout_s: float = TIMEOUT_S) -> tuple[int, str]:
        """The close code and reason the engine closes this socket with (messages before it are skipped)."""
        async with asyncio.timeout(timeout_s):
            try:
                while True:
                    await self.ws.recv()
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None, "the engine closed without a close frame"
                return closed.rcvd.code, closed.rcvd.reason

    async def close(self) -> None:
        await self.ws.close()


class StalledSubscriber:
    """A subscriber on a bare socket with a small receive buffer that reads nothing until :meth:`read_to_close`."""

    def __init__(self, sock: socket.socket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sock = sock
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, url: str, path: str = "/") -> StalledSubscriber:
        host, port = url.removeprefix("ws://").rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window stays small
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 24)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
        assert head.startswith(b"HTTP/1.1 101"), head
        stalled = cls(sock, reader, writer)
        reader._transport.pause_reading()  # type: ignore[attr-defined]  # read nothing from now on
        return stalled

    def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        assert len(payload) < 126
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    async def read_to_close(self, timeout_s: float = TIMEOUT_S) -> tuple[int, str] | None:
        """Read every frame up to the close frame: its code and reason (None if the connection ended without)."""
        self.reader._transport.resume_reading()  # type: ignore[attr-defined]
        async with asyncio.timeout(timeout_s):
            try:
                while True:
                    first, second = await self.reader.readexactly(2)
                    length = second & 0x7F
                    if length == 126:
                        (length,) = struct.unpack("!H", await self.reader.readexactly(2))
                    elif length == 127:
                        (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
                    payload = await self.reader.readexactly(length)
                    if first & 0x0F == 0x8:
                        (code,) = struct.unpack("!H", payload[:2])
                        return code, payload[2:].decode()
            except (asyncio.IncompleteReadError, ConnectionError):
                return None

    def close(self) -> None:
        self.writer.close()


async def bind(worker: RawWorker, trigger_type: str, function_id: str) -> None:
    await worker.send({"type": "registerfunction", "id": function_id})
    await worker.send(
        {"type": "registertrigger", "id": f"{trigger_type}-binding", "trigger_type": trigger_type,
         "function_id": function_id, "config": {}}
    )  # fmt: skip
    await worker.ping()


async def answer(worker: RawWorker, function_id: str, result: Any = None, error: Any = None) -> dict[str, Any]:
    """Answer the next call of ``function_id`` (with ``result``, or ``error``); returns its payload."""
    delivery = await worker.recv_type("invokefunction")
    assert delivery["function_id"] == function_id, delivery
    reply: dict[str, Any] = {"type": "invocationresult", "invocation_id": delivery["invocation_id"]}
    reply.update({"error": error} if error is not None else {"result": result})
    await worker.send(reply)
    data = delivery.get("data")
    assert isinstance(data, dict), delivery
    return data
