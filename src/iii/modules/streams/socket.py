"""The subscription port: an aiohttp server whose WebSocket connections are stream subscribers, and one
subscriber's connection (its bounded outbound queue, its reader and its writer).

Routes (GET only):

* ``/``: the subscription socket (426 without a WebSocket upgrade);
* ``/stream/<stream_name>/<group_id>/`` and ``/stream/<stream_name>/<group_id>/<item_id>``: the same socket,
  joined to that group (or item) at once, with the path as the subscription id;
* ``/iii-stream.js``: the browser client;
* anything else: 404.

Admission (the auth function) is the caller's (:class:`SubscriberHooks`), decided before the upgrade.

**Delivery never waits for a subscriber.** :meth:`SubscriberConnection.offer` puts the frame in the
connection's queue and returns; once per turn of the event loop the connections given frames write them out,
in order, each in one write (a task waits only for a socket that is backed up). A connection whose queue
would pass its bounds (messages or bytes) is dropped: close 1013 with a reason, its transport aborted if the
close cannot be sent within 1 s (a peer that does not read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import unquote

from aiohttp import WSMsgType, web

from iii.modules.streams.messages import Target, close_reason

log = logging.getLogger("iii.modules.streams")

TRY_AGAIN_LATER: Final = 1013
"""Close code of a subscriber dropped for not keeping up (it may reconnect, and gets a fresh sync)."""
INTERNAL_ERROR: Final = 1011
WRITE_BATCH_BYTES: Final = 64 * 1024
"""A subscriber's frames are written up to this much at a time, and not while more than this waits in its socket
(asyncio's default high-water mark: past it the socket's protocol is paused, and a drain waits)."""
SEND_BUFFER_BYTES: Final = 128 * 1024
"""Each subscriber socket's kernel send buffer (``SO_SNDBUF``; Linux doubles it for its bookkeeping). Left to
itself the kernel grows a send buffer up to ``net.ipv4.tcp_wmem``'s maximum (4 MiB and more) behind a peer
that does not read, before the bounded queue holds anything: that would be the real bound of a stalled
subscriber's memory, hundreds of changes, instead of the queue's. 128 KiB still fills a loopback or LAN
round trip with room to spare."""
CLOSE_TIMEOUT_S: Final = 1.0
"""A close frame not sent (and answered) within this long: the transport is aborted."""
SCRIPT: Final = Path(__file__).resolve().parent / "static" / "iii-stream.js"
_DIRECT: Final = re.compile(r"^/stream/([^/]+)/([^/]+)/([^/]*)$")


class Refused(Exception):
    """A client not admitted: answered with ``status`` (401, 503) and ``reason``, no upgrade."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class SubscriberHooks(Protocol):
    """What the server asks of its owner."""

    async def admit(self, request: web.BaseRequest) -> Any:
        """The client's context; raises :class:`Refused` to turn it away before the upgrade."""
        ...

    async def serve(self, connection: SubscriberConnection, first: Target | None) -> None:
        """Run the connection (its messages, until it ends), joined to ``first`` at once if given."""
        ...


class _PendingSync:
    """A place held in a queue for a join's sync: what comes after it waits until it is filled."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: bytes | None = None


class OutboundQueue:
    """A subscriber's messages waiting to be sent, bounded by count and bytes (syncs' bytes not counted: a
    group's sync is as large as the group, and must not drop its own subscriber)."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._entries: deque[bytes | _PendingSync] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, data: bytes) -> bool:
        """Queue ``data``; False (nothing queued) if that would pass a bound."""
        if len(self._entries) >= self.max_messages or self.bytes + len(data) > self.max_bytes:
            return False
        self._entries.append(data)
        self.bytes += len(data)
        return True

    def hold(self) -> _PendingSync | None:
        """Hold a place for a sync (None if the queue is full); fill it with :meth:`fill`."""
        if len(self._entries) >= self.max_messages:
            return None
        slot = _PendingSync()
        self._entries.append(slot)
        return slot

    def fill(self, slot: _PendingSync, data: bytes) -> None:
        slot.data = data

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def take(self, max_bytes: int) -> list[bytes]:
        """The messages ready to be sent, in order: those before the first sync not yet filled, as long as they
        add up to under ``max_bytes`` (at least one if any is ready)."""
        taken: list[bytes] = []
        size = 0
        entries = self._entries
        while entries and size < max_bytes:
            head = entries[0]
            if isinstance(head, bytes):
                self.bytes -= len(head)
            elif head.data is not None:
                head = head.data
            else:
                break
            entries.popleft()
            taken.append(head)
            size += len(head)
        return taken


def text_frame(data: bytes) -> bytes:
    """``data`` as one unmasked text frame (a server's): built once per message, written to every subscriber."""
    length = len(data)
    if length < 126:
        header = bytes((0x81, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, length)
    else:
        header = struct.pack("!BBQ", 0x81, 127, length)
    return header + data


@dataclass(frozen=True, slots=True)
class Limits:
    queue_messages: int
    queue_bytes: int
    max_message_bytes: int
    heartbeat_s: float = 0.0
    """Ping interval (aiohttp's ``heartbeat``: no pong within half of it closes the socket); 0: none."""


@dataclass(slots=True)
class Counts:
    """What every connection of a server adds to."""

    sent: int = 0
    """Messages written to subscribers' sockets."""


class Flusher:
    """Writes out the connections that were given frames, once per turn of the event loop: each connection's
    frames of that turn go in one write (one system call), and no task is woken per message."""

    def __init__(self) -> None:
        self._due: list[SubscriberConnection] = []
        self._scheduled = False

    def mark(self, connection: SubscriberConnection) -> None:
        self._due.append(connection)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        due, self._due = self._due, []
        for connection in due:
            try:
                connection.flush()
            except Exception:  # one connection's failure must not stop the others' delivery
                log.exception("stream: writing to subscriber %s failed", connection.address)
                connection.close(INTERNAL_ERROR, "the engine could not write to this socket")


class SubscriberConnection:
    """One subscriber's WebSocket: its queue, written out by the :class:`Flusher` (or, while the socket is
    backed up, by a task that waits for it to drain), and its frames in (:meth:`frames`)."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.BaseRequest,
        context: Any,
        limits: Limits,
        counts: Counts,
        flusher: Flusher,
    ) -> None:
        self.ws = ws
        self.context = context
        self.address = _address(request)
        self._transport = request.transport
        self._payload_writer = request.writer
        self.queue = OutboundQueue(limits.queue_messages, limits.queue_bytes)
        self._counts = counts
        self._flusher = flusher
        self.closing = False
        self._marked = False
        self._draining: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    def __hash__(self) -> int:
        return id(self)

    def offer(self, frame: bytes) -> bool:
        """Queue ``frame`` (:func:`text_frame`) for sending, without waiting; False if the queue is full (the
        caller drops the connection)."""
        if self.closing:
            return True  # going away already: nothing more to send, and nothing to report
        if not self.queue.put(frame):
            return False
        self._due()
        return True

    def hold_sync(self) -> _PendingSync | None:
        """A place in the queue for a sync (None if the queue is full): what comes after waits until it is filled."""
        return self.queue.hold()

    def fill_sync(self, slot: _PendingSync, frame: bytes) -> None:
        self.queue.fill(slot, frame)
        self._due()

    def _due(self) -> None:
        if not self._marked and self._draining is None:
            self._marked = True
            self._flusher.mark(self)

    def flush(self) -> None:
        """Write the frames ready, while the socket takes them; past :data:`WRITE_BATCH_BYTES` buffered, a task
        waits for it to drain and goes on. (aiohttp writes its own frames, pongs and the close, whole too, so
        frames never interleave.)"""
        self._marked = False
        transport = self._transport
        if self.closing or self.ws.closed or self._draining is not None or transport is None or transport.is_closing():
            return
        while transport.get_write_buffer_size() <= WRITE_BATCH_BYTES:
            frames = self.queue.take(WRITE_BATCH_BYTES)
            if not frames:
                return
            transport.write(b"".join(frames) if len(frames) > 1 else frames[0])
            self._counts.sent += len(frames)
        self._draining = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            await self._payload_writer.drain()
        except (ConnectionError, RuntimeError):
            return  # the socket ended; the reader sees it too and ends the connection
        self._draining = None
        self.flush()

    async def frames(self) -> AsyncIterator[str | bytes]:
        """The client's data frames (text as ``str``, binary as ``bytes``) until the socket ends."""
        async for message in self.ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                yield message.data
            elif message.type is WSMsgType.ERROR:
                return

    def close(self, code: int, reason: str) -> None:
        """Stop sending and close with ``code`` and ``reason`` (in the background; the transport is aborted if
        the close cannot be sent within :data:`CLOSE_TIMEOUT_S`). Only the first call counts."""
        if self.closing:
            return
        self.closing = True
        self.queue.clear()
        self._stop_draining()
        self._closer = asyncio.get_running_loop().create_task(self._close(code, close_reason(reason)))

    def _stop_draining(self) -> None:
        if self._draining is not None:
            self._draining.cancel()

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError, RuntimeError):
            if self._transport is not None:
                self._transport.abort()

    async def finish(self) -> None:
        """After the reader ended: stop writing, and wait for a close under way."""
        self.closing = True
        self._stop_draining()
        if self._closer is not None:
            await self._closer


def _address(request: web.BaseRequest) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "")


class SubscriberServer:
    """The subscription port (see the module docstring)."""

    def __init__(self, hooks: SubscriberHooks, limits: Limits) -> None:
        self._hooks = hooks
        self._limits = limits
        self.counts = Counts()
        self._flusher = Flusher()
        self.host = ""
        self._server = web.Server(self._handle, access_log=None)
        self._listener: asyncio.Server | None = None
        self.connections: set[SubscriberConnection] = set()

    async def listen(self, host: str, port: int) -> None:
        """Listen on ``host:port``; ``OSError`` naming the address if it cannot be bound."""
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_server(self._server, host, port)
        except OSError as exc:
            problem = exc.strerror or exc
            raise OSError(exc.errno, f"cannot serve stream subscribers on {host}:{port}: {problem}") from None
        self.host = host

    @property
    def port(self) -> int:
        assert self._listener is not None, "the subscription port is not open"
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def close(self, grace_s: float = 1.0) -> None:
        """Stop accepting, close every subscriber (1001), and the connections."""
        if self._listener is not None:
            self._listener.close()
        for connection in list(self.connections):
            connection.close(1001, "the engine is shutting down")
        await self._server.shutdown(grace_s)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.wait_closed(), grace_s)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        first: Target | None = None
        if path == "/iii-stream.js":
            return _script(request)
        if path != "/":
            direct = _DIRECT.match(request.rel_url.raw_path)
            if direct is None:
                return _text(404, f"nothing at {path}: subscribe at / (WebSocket), or get /iii-stream.js")
            stream_name, group_id, item_id = (unquote(part) for part in direct.groups())
            first = Target(path, stream_name, group_id, item_id or None)
        if request.method != "GET":
            return _text(405, f"{path} takes GET", {"Allow": "GET"})
        ws = web.WebSocketResponse(
            compress=False,  # one encoding of a change is sent to every subscriber: compressing would be per socket
            max_msg_size=self._limits.max_message_bytes,
            timeout=CLOSE_TIMEOUT_S,
            heartbeat=self._limits.heartbeat_s or None,
        )
        if not ws.can_prepare(request).ok:
            return _text(426, "this is a WebSocket endpoint: connect with a WebSocket client", {"Upgrade": "websocket"})
        try:
            context = await self._hooks.admit(request)
        except Refused as refused:
            return _text(refused.status, refused.reason)
        await ws.prepare(request)
        _bound_send_buffer(request)
        connection = SubscriberConnection(ws, request, context, self._limits, self.counts, self._flusher)
        self.connections.add(connection)
        try:
            await self._hooks.serve(connection, first)
        finally:
            self.connections.discard(connection)
            await connection.finish()
        return ws


def _bound_send_buffer(request: web.BaseRequest) -> None:
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):  # a socket that is already gone: its reader ends the connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


def _script(request: web.BaseRequest) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        return _text(405, "/iii-stream.js takes GET", {"Allow": "GET, HEAD"})
    try:
        body = SCRIPT.read_bytes()
    except OSError:
        return _text(404, "iii-stream.js is not installed with this engine")
    return web.Response(
        body=body,
        headers={
            "Content-Type": "text/javascript; charset=utf-8",
            "Access-Control-Allow-Origin": "*",
            "Cache-Control": "no-cache",
        },
    )
