"""The two streams of an HTTP exchange, on the module's channel ends (:mod:`iii.modules.api`).

For each request the module writes the request body into one channel (:class:`RequestBody`, on the writing
end it keeps) and reads the function's response from another (:class:`ResponseStream`, on the reading end it
keeps). The channels' backpressure reaches the HTTP sockets: the request is read from its socket only while
its channel has room, and the function's writer is held back while the HTTP client has not taken what waits
for it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from typing import Final, Protocol

import msgspec

from iii.modules.api import ChannelBrokenError, ModuleReader, ModuleWriter
from iii.protocol import close_codes

log = logging.getLogger("iii.modules.http")

FRAME_BYTES: Final = 64 * 1024
"""Request bodies are read from the client in pieces of at most this size."""


class FeedOutcome(enum.Enum):
    COMPLETE = "complete"
    TOO_LARGE = "too_large"
    CLIENT_GONE = "client_gone"
    CUT = "cut"
    """The channel ended first: the function closed its reader, or the exchange finished."""


class BodySource(Protocol):
    """What :meth:`RequestBody.pump` reads (aiohttp's ``StreamReader`` is one)."""

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes; ``b""`` at the end of the body."""


class RequestBody:
    """The request body, written into the channel the function reads."""

    def __init__(self, writer: ModuleWriter) -> None:
        self.writer = writer
        self.received = 0
        self.moved_at = asyncio.get_running_loop().time()
        """When the last piece of the body came from the client, or the body ended (event loop time); a piece
        is taken only when the channel has room, so this moves while the function reads."""

    def feed_all(self, body: bytes) -> None:
        """Write a body already in memory and end the stream (the channel keeps what the reader has not taken;
        the body is bounded by the caller)."""
        if body:
            self.writer.write(body)
        self.received = len(body)
        self.writer.close()
        self.moved_at = asyncio.get_running_loop().time()

    async def pump(self, source: BodySource, limit: int) -> FeedOutcome:
        """Stream ``source`` into the channel while the channel has room; stop past ``limit`` bytes.

        Only a complete body ends the stream cleanly: a client that disconnects, or a body over the limit,
        aborts it, so the function sees a broken stream, never a short one.
        """
        writer = self.writer
        loop = asyncio.get_running_loop()
        try:
            while True:
                await writer.drain()
                if writer.cut:
                    return FeedOutcome.CUT
                chunk = await source.read(FRAME_BYTES)
                if writer.cut:
                    return FeedOutcome.CUT
                self.moved_at = loop.time()
                if not chunk:
                    writer.close()
                    return FeedOutcome.COMPLETE
                self.received += len(chunk)
                if self.received > limit:
                    writer.abort(f"the request body is over {limit} bytes")
                    return FeedOutcome.TOO_LARGE
                writer.write(chunk)
        except asyncio.CancelledError:
            writer.abort("the HTTP exchange ended before the request body")
            raise
        except Exception as exc:  # aiohttp reports a vanished client in several ways; all mean the same here
            log.debug("a request body broke: %r", exc)
            writer.abort("the HTTP client disconnected during the request body")
            return FeedOutcome.CLIENT_GONE


class StreamBroken(Exception):
    """The function's response stream ended without its writer closing it cleanly."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"the response stream broke (code {code}: {reason})")
        self.code = code
        self.reason = reason


class ResponseStream:
    """The function's response, read from the channel it writes: control messages first, then the body.

    Text messages before the first binary data are control messages (``set_status``, ``set_headers``); after
    it they are ignored. :meth:`watch` starts reading up to the first data or the end, then calls ``on_change``:
    that may decide the response. :meth:`next_chunk` reads the body from there.
    """

    def __init__(self, reader: ModuleReader, on_change: Callable[[], None]) -> None:
        self.reader = reader
        self.status = 200
        self.headers: dict[str, str] = {}
        self.started = False
        """Binary data has arrived: the response is streamed."""
        self.end: tuple[int, str] | None = None
        """How the stream ended, if it ended before any data (its close code and reason)."""
        self._first: bytes | None = None
        self._on_change = on_change

    @property
    def clean_end(self) -> bool:
        return self.end is not None and self.end[0] == close_codes.NORMAL

    def watch(self) -> None:
        """Read the control messages, up to the first data or the end of the stream (by callbacks: inside the
        engine a read is a future, so watching costs no task)."""
        asyncio.ensure_future(self.reader.read()).add_done_callback(self._watched)

    def _watched(self, read: asyncio.Future[bytes | str | None]) -> None:
        if read.cancelled():
            return
        failure = read.exception()
        if isinstance(failure, ChannelBrokenError):
            code = failure.code if failure.code is not None else close_codes.WRITER_LOST
            self.end = (code, failure.reason)
        elif failure is not None:
            self.end = (close_codes.WRITER_LOST, f"{type(failure).__name__}: {failure}")
        else:
            item = read.result()
            if isinstance(item, str):
                self._control(item)
                self.watch()
                return
            if item is None:
                self.end = (close_codes.NORMAL, "")
            else:
                self._first = item
                self.started = True
        self._on_change()

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body; None at a clean end. Raises :class:`StreamBroken` at a broken end."""
        first = self._first
        if first is not None:
            self._first = None
            return first
        try:
            while isinstance(item := await self.reader.read(), str):
                pass  # the head has gone out; the reference engine ignores these too
        except ChannelBrokenError as exc:
            raise StreamBroken(exc.code if exc.code is not None else close_codes.WRITER_LOST, exc.reason) from None
        return item

    def _control(self, text: str) -> None:
        try:
            message = msgspec.json.decode(text)
        except (msgspec.DecodeError, RecursionError):
            log.debug("ignored a response text message that is not JSON")
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
