"""The worker control socket (``/``): frames in, typed messages to the engine, encoded messages out.

This is the I/O shell only. It reassembles fragmented text messages, decodes them, and hands each message
to :class:`iii.engine.server.Engine`; what a message means is decided there. Bad input never closes the
socket: malformed JSON, wrong field types, binary frames and messages over ``max_message_bytes`` are
answered with an error and the connection goes on; unknown message types are ignored, as the protocol
requires. Only a message too big to read at all (:func:`read_limit`) closes it (1009).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Final

import msgspec
from picows import WSFrame, WSMsgType, WSTransport

from iii.engine.read_holds import ReadHolds
from iii.engine.sockets import TrackedListener, Tracker, answer_close, close_transport
from iii.protocol import close_codes, errors
from iii.protocol.codec import MalformedMessage, decode_inbound, encode, peek_address
from iii.protocol.messages import ErrorBody, ErrorNotice, InvocationResult

if TYPE_CHECKING:
    from iii.engine.core import Core
    from iii.engine.peers import ConnectionSession

log = logging.getLogger("iii.engine.workers")

_TELEMETRY_PREFIXES: Final = (b"OTLP", b"MTRC", b"LOGS")
_WRITE_BUFFER_HIGH: Final = 4 * 1024 * 1024


def read_limit(max_message_bytes: int) -> int:
    """The largest message a worker socket reads at all: twice the limit, and at least 16 MiB more.

    A message over the limit but within this is read, never acted on, and answered with
    ``message_too_big`` (the caller of an oversized call, or of a call whose result was oversized, learns
    why, and the connection goes on). Only a message beyond this closes the socket (1009), since reading it
    would cost unbounded memory.
    """
    return max(2 * max_message_bytes, max_message_bytes + 16 * 1024 * 1024)


def _text_frame_header(size: int) -> bytes:
    """The header of an unmasked, final text frame of ``size`` bytes (server to client, RFC 6455 §5.2)."""
    if size < 126:
        return bytes((0x81, size))
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big")
    return b"\x81\x7f" + size.to_bytes(8, "big")


class Outbox:
    """Control messages on their way out, gathered per connection and written with one system call each.

    Routing one call makes two messages (the delivery, later the result), each a syscall if sent at once;
    under load that is most of the engine's time. Messages produced while a read is being processed are
    flushed when its last frame has been handled, and at the latest on the loop's next iteration, so
    batching never delays a message behind anything but work already in hand.
    """

    def __init__(self) -> None:
        self._dirty: list[WorkerConnection] = []
        self._scheduled = False
        self.reading = False
        """True while a worker's read is being processed: its end flushes, no callback is needed."""

    def push(self, connection: WorkerConnection, payload: bytes) -> None:
        pending = connection.outgoing
        if not pending:
            self._dirty.append(connection)
            if not self._scheduled and not self.reading:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self.flush)
        pending.append(_text_frame_header(len(payload)))
        pending.append(payload)

    def flush(self) -> None:
        self._scheduled = False
        self.reading = False
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            connection.flush()


class WorkerConnection(ReadHolds, TrackedListener):
    """One worker's control socket, and what the engine knows about that worker.

    With a ``session`` (a worker of a module's worker port), the session learns of the connection, its messages
    and its end instead of the core: it admits the worker and hands the core what the worker may do.
    """

    def __init__(
        self,
        core: Core,
        track: Tracker,
        outbox: Outbox,
        max_message_bytes: int,
        session: ConnectionSession | None = None,
    ) -> None:
        # Backpressure between workers (ReadHolds): a worker whose outgoing buffer is full (it does not read fast
        # enough) holds back the reading of every worker that sends it more, until its buffer drains.
        super().__init__(track)
        self.core = core
        self.session = session
        self.worker_id = str(uuid.uuid4())
        self.reattach_token = str(uuid.uuid4())
        self.name = ""
        self.peer_address = ""
        self.metadata: dict[str, Any] = {}
        self.features: frozenset[str] = frozenset()
        """What the worker said it speaks (``engine::workers::register`` ``features``: ``observe.v1``, ...)."""
        self.connected_at = time.time()
        self.last_heard = time.monotonic()
        """When the worker last sent anything (a frame of any kind, pongs included)."""
        self.pinged_at: float | None = None
        self.transport: WSTransport | None = None
        self.alive = False
        self._max_message_bytes = max_message_bytes
        self._max_read_bytes = read_limit(max_message_bytes)
        self._outbox = outbox
        self.outgoing: list[bytes] = []
        """Frames (header, payload, ...) waiting for the outbox's next flush."""
        self._fragments: bytearray | None = None

    def __repr__(self) -> str:
        return f"<worker {self.worker_id} {self.name!r}>"

    # Host / Caller -----------------------------------------------------------------------------------

    def send_message(self, payload: bytes) -> None:
        if self.transport is not None and self.alive:
            self._outbox.push(self, payload)

    def flush(self) -> None:
        """Write the frames gathered for this worker in one go."""
        pending, self.outgoing = self.outgoing, []
        transport = self.transport
        if pending and transport is not None and not transport.is_disconnected and not transport.is_close_frame_sent:
            if len(pending) == 2:
                transport.send(WSMsgType.TEXT, pending[1])  # one message: picows frames and writes it
            else:
                transport.underlying_transport.writelines(pending)

    def deliver_result(self, invocation_id: str, function_id: str, result: msgspec.Raw, error: msgspec.Raw) -> None:
        self.send_message(
            encode(InvocationResult(invocation_id=invocation_id, function_id=function_id, result=result, error=error))
        )

    def send_error_notice(self, code: str, message: str, function_id: str | None = None) -> None:
        notice = ErrorNotice(error=ErrorBody(code=code, message=message), function_id=function_id)
        self.send_message(encode(notice))

    def check_alive(self, now: float, interval_s: float, timeout_s: float) -> bool:
        """Ping a worker silent for ``interval_s``; False when it stayed silent ``timeout_s`` after the ping.

        ``last_heard`` is refreshed lazily: a frame only clears a pending ping, and the time of the last
        frame is then taken as now; a busy worker costs nothing per frame.
        """
        if self.pinged_at is None:
            if now - self.last_heard < interval_s:
                return True
            if self.transport is not None:
                self.transport.send_ping()
            self.pinged_at = now
            return True
        return now - self.pinged_at < timeout_s

    def close(self, code: int, reason: str) -> None:
        if self.transport is not None:
            self.flush()  # what was said before the close arrives before it
            close_transport(self.transport, code, reason)

    # WSListener --------------------------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        self.transport = transport
        self.alive = True
        peer = transport.underlying_transport.get_extra_info("peername")
        self.peer_address = str(peer[0]) if peer else ""
        transport.underlying_transport.set_write_buffer_limits(high=_WRITE_BUFFER_HIGH)
        if self.session is not None:
            self.session.on_connected(self)
        else:
            self.core.on_worker_connected(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        self._fragments = None
        was_alive, self.alive = self.alive, False
        self.drop_holds()
        if self.session is not None:
            self.session.on_disconnected(was_alive)
        elif was_alive:  # not retired by a reattach, which hands everything over instead
            self.core.on_worker_disconnected(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self.pinged_at is not None:
            self.pinged_at = None
            self.last_heard = time.monotonic()
        outbox = self._outbox
        outbox.reading = True
        try:
            self._on_frame(transport, frame)
        finally:
            if frame.last_in_buffer:
                outbox.flush()

    def _on_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.TEXT:
            if frame.fin:
                if self._fragments is not None:
                    self._protocol_error("a new text message started before the previous one was finished")
                    return
                self._on_text(frame.get_payload_as_memoryview())
            else:
                self._fragments = bytearray(frame.get_payload_as_memoryview())
                self._check_size(len(self._fragments))
        elif msg_type is WSMsgType.CONTINUATION:
            if self._fragments is None:
                return  # continuation of a binary message, or of nothing: ignored like the binary frame
            self._fragments += frame.get_payload_as_memoryview()
            if not self._check_size(len(self._fragments)):
                return
            if frame.fin:
                message, self._fragments = self._fragments, None
                self._on_text(message)
        elif msg_type is WSMsgType.BINARY:
            payload = frame.get_payload_as_memoryview()
            if bytes(payload[:4]) in _TELEMETRY_PREFIXES:
                # Telemetry belongs on /otel, but the reference takes it here too.
                if self.core.receives_telemetry:
                    self.core.on_telemetry(bytes(payload))
                return
            self.core.send_error_notice(
                self, errors.INVALID_MESSAGE, "binary frames are not accepted on the control socket; send JSON text"
            )
        elif msg_type is WSMsgType.CLOSE:
            answer_close(transport, frame)

    # internals ---------------------------------------------------------------------------------------

    def _check_size(self, size: int) -> bool:
        """False (and the socket closed with 1009) once a fragmented message grows past what is ever read."""
        if size <= self._max_read_bytes:
            return True
        self._fragments = None
        log.warning("worker=%s message too big to read: over %d bytes", self.worker_id, self._max_read_bytes)
        self.close(close_codes.MESSAGE_TOO_BIG, f"message exceeds {self._max_message_bytes} bytes")
        return False

    def _protocol_error(self, reason: str) -> None:
        self._fragments = None
        self.close(close_codes.POLICY_VIOLATION, reason)

    def _on_text(self, payload: bytes | bytearray | memoryview) -> None:
        if len(payload) > self._max_message_bytes:
            # Never acted on; the sender (and a waiting caller) is told, and the connection goes on.
            self.core.on_oversized_message(self, peek_address(payload), len(payload))
            return
        if self.session is not None:  # it may keep the message past this callback: not in picows' buffer
            payload = bytes(payload)
        try:
            message = decode_inbound(payload)
        except MalformedMessage as exc:
            self.core.on_malformed_message(self, exc)
            return
        if message is None:
            return
        if self.session is not None:
            self.session.on_message(message, len(payload))
        else:
            self.core.on_worker_message(self, message)
