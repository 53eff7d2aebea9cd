"""The engine's own ends of the two channels of an HTTP exchange.

For each request the engine writes the request body into one channel (:class:`RequestBodyFeeder`, the
writing end) and reads the function's response from another (:class:`ResponseStream`, the reading end).
Both implement :class:`iii.engine.channels.ChannelEnd`, so the channel relays to and from them exactly as
it does for sockets, with the same backpressure: the feeder stops reading the HTTP request while the
channel holds the writer back, and the response stream holds the function's writer back while the HTTP
client has not taken what is buffered.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

import msgspec

from iii.engine.channels import Channel, FrameKind
from iii.protocol import close_codes

log = logging.getLogger("iii.engine.http")

FRAME_BYTES: Final = 64 * 1024
"""Request bodies go to functions in frames of at most this size."""
_RESPONSE_HIGH_BYTES: Final = 1024 * 1024
"""Response bytes held for the HTTP client before the function's writer is held back."""
_RESPONSE_LOW_BYTES: Final = 256 * 1024


class FeedOutcome(enum.Enum):
    COMPLETE = "complete"
    TOO_LARGE = "too_large"
    CLIENT_GONE = "client_gone"
    CUT = "cut"
    """The channel ended first: the function closed its reader, or the exchange finished."""


class BodySource(Protocol):
    """What :meth:`RequestBodyFeeder.pump` reads (aiohttp's ``StreamReader`` is one)."""

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes; ``b""`` at the end of the body."""


class RequestBodyFeeder:
    """The writing end of a request-body channel, fed from the HTTP request."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._room = asyncio.Event()
        self._room.set()
        self.cut: tuple[int, str] | None = None
        """Set when the channel closed this end (the function's reader went away, or the exchange ended)."""
        self.received = 0
        self.moved_at = asyncio.get_running_loop().time()
        """When the last piece of the body came from the client, or the body ended (event loop time); the
        feeder takes a piece only when the channel has room, so this moves while the function reads."""

    # ChannelEnd: the channel talks to a writer only to hold it back, let it go, or close it.
    @property
    def write_paused(self) -> bool:
        return False

    def send_frame(self, kind: FrameKind, payload: bytes | memoryview, fin: bool) -> None:
        pass  # a writer end receives nothing

    def close(self, code: int, reason: str) -> None:
        if self.cut is None:
            self.cut = (code, reason)
        self._room.set()

    def pause_reading(self) -> None:
        self._room.clear()

    def resume_reading(self) -> None:
        self._room.set()

    def hung_up(self) -> bool:
        return False  # a client that leaves ends the body at once (aiohttp reads it)

    # Feeding --------------------------------------------------------------------------------------------

    def feed_all(self, body: bytes) -> None:
        """Write a body already in memory and end the stream (the channel queues what the reader has not
        taken; the body is bounded by the caller)."""
        view = memoryview(body)
        for offset in range(0, len(view), FRAME_BYTES):
            self.channel.on_writer_frame(FrameKind.BINARY, view[offset : offset + FRAME_BYTES], True)
        self.received = len(body)
        self.channel.on_writer_end(close_codes.NORMAL, "request body complete")
        self.moved_at = asyncio.get_running_loop().time()

    async def pump(self, source: BodySource, limit: int) -> FeedOutcome:
        """Stream ``source`` into the channel while the channel has room; stop past ``limit`` bytes.

        Only a complete body ends the stream cleanly: a client that disconnects, or a body over the
        limit, ends it with ``WRITER_LOST`` so the function sees a broken stream, never a short one.
        """
        channel = self.channel
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._room.is_set():
                    await self._room.wait()
                if self.cut is not None:
                    return FeedOutcome.CUT
                chunk = await source.read(FRAME_BYTES)
                if self.cut is not None:
                    return FeedOutcome.CUT
                self.moved_at = loop.time()
                if not chunk:
                    channel.on_writer_end(close_codes.NORMAL, "request body complete")
                    return FeedOutcome.COMPLETE
                self.received += len(chunk)
                if self.received > limit:
                    channel.on_writer_end(close_codes.WRITER_LOST, f"the request body is over {limit} bytes")
                    return FeedOutcome.TOO_LARGE
                channel.on_writer_frame(FrameKind.BINARY, chunk, True)
        except asyncio.CancelledError:
            channel.on_writer_end(close_codes.WRITER_LOST, "the HTTP exchange ended before the request body")
            raise
        except Exception as exc:  # aiohttp reports a vanished client in several ways; all mean the same here
            log.debug("request body of channel %s broke: %r", channel.channel_id, exc)
            channel.on_writer_end(close_codes.WRITER_LOST, "the HTTP client disconnected during the request body")
            return FeedOutcome.CLIENT_GONE


class StreamBroken(Exception):
    """The function's response stream ended without its writer closing it cleanly."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the response stream broke (code {code}: {reason})")
        self.code = code
        self.reason = reason


class ResponseStream:
    """The reading end of a response channel: control messages first, then the body.

    Text messages before the first binary data are control messages (``set_status``, ``set_headers``);
    after it they are ignored. ``on_change`` is called whenever something happens that may decide the
    response: a control message, the first data, the end.
    """

    def __init__(self, channel: Channel, on_change: Callable[[], None]) -> None:
        self.channel = channel
        self.status = 200
        self.headers: dict[str, str] = {}
        self.started = False
        """Binary data has arrived: the response is streamed."""
        self.end: tuple[int, str] | None = None
        self._on_change = on_change
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._stalled = False
        self._text: list[bytes] | None = None
        """Fragments of a text message in progress."""
        self._arrived = asyncio.Event()

    @property
    def clean_end(self) -> bool:
        return self.end is not None and self.end[0] == close_codes.NORMAL

    # ChannelEnd -----------------------------------------------------------------------------------------

    @property
    def write_paused(self) -> bool:
        return self._buffered >= _RESPONSE_HIGH_BYTES

    def send_frame(self, kind: FrameKind, payload: bytes | memoryview, fin: bool) -> None:
        if kind is FrameKind.TEXT or (kind is FrameKind.CONTINUATION and self._text is not None):
            parts = self._text if self._text is not None else []
            parts.append(bytes(payload))
            self._text = None if fin else parts
            if fin:
                self._control(b"".join(parts))
            return
        self._chunks.append(bytes(payload))
        self._buffered += len(payload)
        if self._buffered >= _RESPONSE_HIGH_BYTES:
            self._stalled = True
        self._arrived.set()
        if not self.started:
            self.started = True
            self._on_change()

    def close(self, code: int, reason: str) -> None:
        if self.end is None:
            self.end = (code, reason)
            self._arrived.set()
            self._on_change()

    def pause_reading(self) -> None:
        pass  # the channel holds back writers only

    def resume_reading(self) -> None:
        pass

    def hung_up(self) -> bool:
        return False  # a reader end: never held back

    # The body, for the HTTP side ------------------------------------------------------------------------

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body; None at a clean end. Raises :class:`StreamBroken` at a broken end."""
        while not self._chunks:
            if self.end is not None:
                if self.clean_end:
                    return None
                raise StreamBroken(*self.end)
            self._arrived.clear()
            await self._arrived.wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._stalled and self._buffered <= _RESPONSE_LOW_BYTES:
            self._stalled = False
            self.channel.on_reader_writable()
        return chunk

    def _control(self, text: bytes) -> None:
        if self.started:
            return  # the head has gone out; the reference engine ignores these too
        try:
            message = msgspec.json.decode(text)
        except (msgspec.DecodeError, RecursionError):
            log.debug("channel %s: ignored a response text message that is not JSON", self.channel.channel_id)
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "set_status":
            code = message.get("status_code")
            if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
                self.status = code
        elif kind == "set_headers":
            headers = message.get("headers")
            if isinstance(headers, dict):
                self.headers.update({str(k): str(v) for k, v in headers.items() if isinstance(v, str | int)})
        self._on_change()
