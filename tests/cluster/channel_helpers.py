"""Building blocks for the channel tests across engines: a Redis with two engine processes in one cluster and an
SDK worker on each; raw WebSocket helpers (reading a channel end to its close, a client that sends frames right
behind its upgrade request)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection

from iii import III, InitOptions, register_worker
from iii.testing import EngineProcess
from tests.redis_server import RedisServer


@dataclass
class Cluster:
    """Engines A and B on one Redis, with a worker of our SDK on each."""

    redis: RedisServer
    a: EngineProcess
    b: EngineProcess
    client_a: III
    client_b: III


def cluster_engine(redis: RedisServer) -> EngineProcess:
    """An engine process of the cluster on ``redis``, running no modules (the core alone)."""
    return EngineProcess(["--redis-url", redis.url, "--modules", "", "--http-port", "-1"])


@contextlib.contextmanager
def start_cluster() -> Iterator[Cluster]:
    with (
        RedisServer() as redis,
        cluster_engine(redis) as a,
        cluster_engine(redis) as b,
        contextlib.closing(_Client(a.url, "on-a")) as on_a,
        contextlib.closing(_Client(b.url, "on-b")) as on_b,
    ):
        yield Cluster(redis, a, b, on_a.client, on_b.client)


class _Client:
    """A worker shut down on close (``contextlib.closing``)."""

    def __init__(self, url: str, name: str) -> None:
        self.client = register_worker(url, InitOptions(worker_name=name))

    def close(self) -> None:
        self.client.shutdown()


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame (RFC 6455: clients mask what they send)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
    return head + mask + masked


async def pipelined(url: str, frames: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a WebSocket to ``url`` sending ``frames`` in the same write as the upgrade request, before any
    answer (as a client may); the connection, left open."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    writer.write(request.encode() + frames)
    await writer.drain()
    return reader, writer


async def read_all(ws: ClientConnection) -> tuple[bytes, list[str], int | None, str]:
    """Collect binary data and text messages until the engine closes; returns them with the close code and reason."""
    chunks: list[bytes] = []
    texts: list[str] = []
    with contextlib.suppress(websockets.ConnectionClosedError):
        async for item in ws:
            if isinstance(item, bytes):
                chunks.append(item)
            else:
                texts.append(item)
    return b"".join(chunks), texts, ws.close_code, ws.close_reason or ""
