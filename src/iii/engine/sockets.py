"""picows listeners for the engine's WebSocket routes other than the worker socket.

* :class:`ChannelSocket`: one connected end of a channel, the thin I/O shell of
  :class:`iii.engine.channels.Channel`.
* :class:`RefusingSocket`: completes the upgrade only to close at once with a code and a reason (an end
  already taken, a missing token), so the client learns why.
* :class:`TelemetrySocket`: ``/otel``; hands each binary message to the module that receives telemetry (through
  the core), or reads and discards it when none does (the official SDKs would otherwise retry forever).

Every listener reads its socket until it closes, and picows answers pings on all of them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Final

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)

from iii.engine.channels import Channel, FrameKind, Role
from iii.protocol import close_codes

log = logging.getLogger("iii.engine.channels")

_CLEAN_CLOSE_CODES: Final = frozenset((WSCloseCode.OK, WSCloseCode.NO_INFO))
_FRAME_KINDS: Final = {
    WSMsgType.BINARY: FrameKind.BINARY,
    WSMsgType.TEXT: FrameKind.TEXT,
    WSMsgType.CONTINUATION: FrameKind.CONTINUATION,
}
_MSG_TYPES: Final = {kind: msg_type for msg_type, kind in _FRAME_KINDS.items()}
_WRITE_BUFFER_HIGH: Final = 1024 * 1024
"""Outgoing bytes a reader socket may have buffered before the relay holds the writer back."""
_LINGER_S: Final = 2.0
"""How long a socket the engine closes keeps being read (and its data dropped) while the peer answers the
close; closing at once with unread data would reset the connection and lose the close frame."""
_WRITER_RCVBUF: Final = 256 * 1024
"""Kernel receive buffer of a writer's socket. picows reads whatever the kernel holds into a buffer that
only grows; a bounded kernel buffer keeps each read (and the memory it touches) small and cache-warm."""
_TELEMETRY_RCVBUF: Final = 64 * 1024
"""Kernel receive buffer of an ``/otel`` socket, for the same reason: under a flood of telemetry, each read would
otherwise grow picows' buffer up to what the kernel holds (megabytes per socket, kept for good) and hand the
engine thousands of messages at once."""


def http_error(status: int, text: str) -> WSUpgradeResponseWithListener:
    """An upgrade request answered with an HTTP error instead."""
    return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(status, text.encode()), None)


_TCP_STATES_HUNG_UP: Final = frozenset((7, 8, 9))
"""Linux TCP states (include/net/tcp_states.h) after the peer's FIN or RST: CLOSE, CLOSE_WAIT, LAST_ACK."""


def peer_hung_up(transport: WSTransport) -> bool:
    """Whether the kernel knows the peer finished sending (FIN) or reset the connection, without reading it.

    Reads the socket's TCP state (``TCP_INFO``, Linux); elsewhere, or for a non-TCP socket, False.
    """
    sock = transport.underlying_transport.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return False
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return False
    return state in _TCP_STATES_HUNG_UP


def close_transport(transport: WSTransport, code: int, reason: str) -> None:
    """Send a close frame (unless one was sent) and drop the connection after flushing; idempotent."""
    if transport.is_disconnected:
        return
    if not transport.is_close_frame_sent:
        transport.send_close(WSCloseCode(code), reason.encode()[:120])
    transport.disconnect()


def linger_close(transport: WSTransport, code: int, reason: str) -> None:
    """Start the closing handshake and drop the connection once the peer answers (or after ``_LINGER_S``).

    A peer that is still sending (a writer whose reader left) would otherwise get a TCP reset, and with it
    lose the close frame that says why its stream ended. Meanwhile its frames are read and dropped.
    """
    if transport.is_disconnected:
        return
    if not transport.is_close_frame_sent:
        transport.send_close(WSCloseCode(code), reason.encode()[:120])
    transport.underlying_transport.resume_reading()
    asyncio.get_running_loop().call_later(_LINGER_S, transport.disconnect)


def answer_close(transport: WSTransport, frame: WSFrame) -> None:
    """Complete the closing handshake the peer started."""
    code = frame.get_close_code()
    close_transport(transport, close_codes.NORMAL if code in _CLEAN_CLOSE_CODES else code.value, "")


Tracker = Callable[[WSTransport, bool], None]
"""Told of every socket that connects (True) and disconnects (False), so shutdown can close them all."""


def _untracked(transport: WSTransport, connected: bool) -> None:
    pass


class TrackedListener(WSListener):
    """A listener that reports its socket to a :data:`Tracker`."""

    def __init__(self, tracker: Tracker = _untracked) -> None:
        self._tracker = tracker

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._tracker(transport, True)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._tracker(transport, False)


class ChannelSocket(TrackedListener):
    """One end of a channel over a WebSocket."""

    def __init__(self, channel: Channel, role: Role, max_frame_bytes: int, tracker: Tracker = _untracked) -> None:
        super().__init__(tracker)
        self.channel = channel
        self.role = role
        self.max_frame_bytes = max_frame_bytes
        """A writer's frame larger than this aborts its stream (1009 to the writer, 4001 to the reader)."""
        self.transport: WSTransport | None = None
        self._write_paused = False
        self._settled = False
        """The channel knows how this end finished (we closed it, or it closed): later frames and the disconnect
        are ignored."""

    # ChannelEnd --------------------------------------------------------------------------------------

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    def send_frame(self, kind: FrameKind, payload: bytes | memoryview, fin: bool) -> None:
        assert self.transport is not None
        self.transport.send(_MSG_TYPES[kind], payload, fin)

    def close(self, code: int, reason: str) -> None:
        self._settled = True
        if self.transport is not None:
            linger_close(self.transport, code, reason)

    def pause_reading(self) -> None:
        assert self.transport is not None
        self.transport.underlying_transport.pause_reading()

    def resume_reading(self) -> None:
        assert self.transport is not None
        if not self.transport.is_disconnected:
            self.transport.underlying_transport.resume_reading()

    def hung_up(self) -> bool:
        return self.transport is not None and peer_hung_up(self.transport)

    # WSListener --------------------------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        self.transport = transport
        if self.role is Role.READER:
            transport.underlying_transport.set_write_buffer_limits(high=_WRITE_BUFFER_HIGH)
        else:
            sock = transport.underlying_transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _WRITER_RCVBUF)
        self.channel.attach(self.role, self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.CLOSE:
            if self._settled:
                transport.disconnect()  # the peer answered our close: the handshake is complete
            else:
                self._on_close_frame(transport, frame)
            return
        kind = _FRAME_KINDS.get(msg_type)
        if kind is None or self.role is Role.READER or self._settled:
            return  # pings are answered by picows; readers have nothing to say but close; closing: dropped
        payload = frame.get_payload_as_memoryview()
        if len(payload) > self.max_frame_bytes:
            reason = f"a frame of {len(payload)} bytes is over the engine's limit of {self.max_frame_bytes}"
            log.warning("channel=%s writer sent %s: stream aborted", self.channel.channel_id, reason)
            self.close(close_codes.MESSAGE_TOO_BIG, reason)
            self.channel.on_writer_end(close_codes.WRITER_LOST, f"the writer's stream was aborted: {reason}")
            return
        self.channel.on_writer_frame(kind, payload, frame.fin)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        if self._settled:
            return
        if self.role is Role.WRITER:
            self.channel.on_writer_end(close_codes.WRITER_LOST, "the writer disconnected before ending the stream")
        else:
            self.channel.on_reader_gone("disconnected")

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.role is Role.READER:
            self.channel.on_reader_writable()

    def _on_close_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        code = frame.get_close_code()
        reason = frame.get_close_reason() or ""
        self._settled = True
        answer_close(transport, frame)
        if self.role is Role.WRITER:
            if code in _CLEAN_CLOSE_CODES:
                self.channel.on_writer_end(close_codes.NORMAL, reason or "stream complete")
            else:
                self.channel.on_writer_end(
                    close_codes.WRITER_LOST, f"the writer aborted the stream (code {code.value}: {reason})"
                )
        else:
            self.channel.on_reader_gone(f"closed with code {code.value}")


class RefusingSocket(TrackedListener):
    """Accepts the upgrade, then closes at once with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str, tracker: Tracker = _untracked) -> None:
        super().__init__(tracker)
        self.code = code
        self.reason = reason

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        close_transport(transport, self.code, self.reason)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            transport.disconnect()


class TelemetrySocket(TrackedListener):
    """``/otel``: the SDKs' telemetry. Each binary message (its fragments joined) goes to ``deliver``, with the
    socket's transport (so that a receiver that falls behind can pause reading it); text
    frames are ignored. While ``wanted()`` is false (no module receives telemetry) everything is read and
    dropped unassembled. A message larger than ``max_message_bytes`` is dropped (logged once per socket, so that
    a sender cannot flood the log) and the socket goes on: one bad message must not cost the SDK its
    connection."""

    def __init__(
        self,
        deliver: Callable[[bytes, WSTransport], None],
        wanted: Callable[[], bool],
        max_message_bytes: int,
        tracker: Tracker = _untracked,
    ) -> None:
        super().__init__(tracker)
        self._deliver = deliver
        self._wanted = wanted
        self._max_bytes = max_message_bytes
        self._fragments: bytearray | None = None
        """The message being received, while its fragments arrive (None: none, or one being skipped)."""
        self._oversized = 0
        """Messages dropped for their size."""

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        sock = transport.underlying_transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _TELEMETRY_RCVBUF)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.BINARY:
            self._fragments = None
            if not self._wanted():
                return
            if frame.fin:
                self._complete(transport, frame.get_payload_as_bytes())
            else:
                self._fragments = bytearray(frame.get_payload_as_memoryview())
                self._check_size()
        elif msg_type is WSMsgType.CONTINUATION:
            if self._fragments is None:
                return  # of a text message, of a dropped one, or of nothing
            self._fragments += frame.get_payload_as_memoryview()
            if self._check_size() and frame.fin:
                message, self._fragments = bytes(self._fragments), None
                self._complete(transport, message)
        elif msg_type is WSMsgType.TEXT:
            self._fragments = None
        elif msg_type is WSMsgType.CLOSE:
            answer_close(transport, frame)

    def _check_size(self) -> bool:
        if self._fragments is not None and len(self._fragments) > self._max_bytes:
            self._fragments = None
            self._drop_oversized()
            return False
        return True

    def _complete(self, transport: WSTransport, message: bytes) -> None:
        if len(message) > self._max_bytes:
            self._drop_oversized()
            return
        self._deliver(message, transport)

    def _drop_oversized(self) -> None:
        self._oversized += 1
        if self._oversized == 1:
            log.warning("dropped a telemetry message over %d bytes (--max-message-bytes)", self._max_bytes)
