"""Channel ends for workers: :class:`ChannelWriter`, :class:`ChannelReader`, their refs and :class:`Channel`.

Each end is one WebSocket to ``/ws/channels/{id}`` on the engine, opened lazily on first use. Every method
follows the dual-mode rule of :mod:`iii.sdk.portal`; calls on one end run in call order.

* **An end lives on the loop that first uses it**: the event loop running in the thread of its first call
  (an ``async def`` program's own loop, so its writes and reads need no thread hop), or the SDK's loop when
  the first call comes from plain synchronous code. Later calls from any thread or loop are handed to that
  loop. When that loop ends (``asyncio.run`` returns), what was written and closed is flushed first; an end
  used after its loop ended raises :class:`~iii.errors.UsageError`.

* Writes are split into 64 KiB frames and are **backpressured**: ``write`` completes once the data is in
  the socket's buffer and that buffer is below its high-water mark. Before the reader connects, the engine
  holds the channel's buffer (``buffer_size`` frames, and a byte budget) plus what the TCP buffers take;
  past that, ``write`` waits (blocks, in synchronous code) until the reader reads.
* A reader yields data only while the stream is intact. If the stream ends any other way than its writer
  closing it, the reader raises :class:`~iii.errors.ChannelBrokenError` (after the data that did arrive),
  so a broken stream never looks complete; a writer whose reader went away raises the same on its next
  call.
* Misuse (writing after close, reading an end twice) raises :class:`~iii.errors.UsageError`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Self

from picows import WSCloseCode, WSError, WSFrame, WSInvalidStatusError, WSListener, WSMsgType, WSTransport, ws_connect
from pydantic import BaseModel

from iii.errors import ChannelBrokenError, ChannelError, ChannelRefusedError, UsageError
from iii.protocol import close_codes
from iii.protocol.refs import channel_url
from iii.sdk.end_states import (
    READER_FINISHED,
    WRITER_ACCEPTS_DATA,
    WRITER_FINISHED,
    ReaderEvent,
    ReaderState,
    WriterEvent,
    WriterState,
    reader_after,
    writer_after,
)
from iii.sdk.portal import LOOP_ENDED, Portal, await_on, dual, inbox, running_loop, wake
from iii.sdk.terms import EngineTerms

log = logging.getLogger("iii.channels")

FRAME_BYTES: Final = 64 * 1024
"""Data is sent in binary frames of at most this size, as every iii SDK does."""
_READ_HIGH_FRAMES: Final = 64
_READ_LOW_FRAMES: Final = 16
_WRITE_HIGH_BYTES: Final = 1024 * 1024
_CLOSE_WAIT_S: Final = 10.0
_BACKLOG_BYTES: Final = 1024 * 1024
"""Bytes a writer's backlog may hold before its callers wait (on top of the socket's own buffer)."""
_DATA: Final = 0
_TEXT: Final = 1
_CLOSE: Final = 2
_ABORT: Final = 3
_ABORTED_CODE: Final = 1011
"""The close code of a writer aborted by its invocation's end (any code but 1000: the reader sees 4001)."""
_PUMPS: set[asyncio.Task[None]] = set()
"""Running writer pumps (kept referenced until they finish)."""
_MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
_FLUSH_AT_LOOP_END_S: Final = 10.0
"""How long a writer's pump may go on sending what was written when its loop is ending (``asyncio.run``
cancels every task as it returns)."""


class StreamChannelRef(BaseModel):
    """The serializable handle of one channel end: pass it (or ``model_dump()``) inside a trigger payload."""

    channel_id: str
    access_key: str
    direction: Literal["read", "write"]


class _EndSocket(WSListener):
    """The picows listener of one end: frames in, flow control, how the socket ended."""

    def __init__(self, end: _ChannelEnd) -> None:
        self.end = end
        self.transport: WSTransport | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        transport.underlying_transport.set_write_buffer_limits(high=_WRITE_HIGH_BYTES)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.BINARY:
            self.end._on_data(frame.get_payload_as_bytes(), transport)
        elif msg_type is WSMsgType.TEXT:
            self.end._on_text(frame.get_payload_as_utf8_text(), transport)
        elif msg_type is WSMsgType.CLOSE:
            if self.close_code is None:
                code = frame.get_close_code()
                # picows reports a close frame without a code as 0; the standard number for it is 1005.
                self.close_code = close_codes.NO_STATUS if code is WSCloseCode.NO_INFO else code.value
                self.close_reason = frame.get_close_reason() or ""
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.writable.set()
        self.closed.set()
        self.end._on_closed()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class _ChannelEnd:
    """What writer and reader share: the ref, the lazy socket, ordering of calls, the sticky error."""

    _direction: Literal["read", "write"]

    def __init__(
        self,
        engine_url: str,
        ref: StreamChannelRef | Mapping[str, Any],
        portal: Portal,
        headers: Mapping[str, str] | None = None,
        terms: EngineTerms | None = None,
    ) -> None:
        self.ref = ref if isinstance(ref, StreamChannelRef) else StreamChannelRef.model_validate(dict(ref))
        if self.ref.direction != self._direction:
            raise UsageError(f"a {type(self).__name__} needs a '{self._direction}' ref, got '{self.ref.direction}'")
        self._url = channel_url(engine_url, self.ref.channel_id, self.ref.access_key, self._direction)
        self._portal = portal
        self._headers = dict(headers or {})
        self._terms = terms or EngineTerms()
        self._socket: _EndSocket | None = None
        self._connecting: asyncio.Future[_EndSocket] | None = None
        self._error: BaseException | None = None
        self._kept = False
        self._home: asyncio.AbstractEventLoop | None = None
        """The loop that drives this end's socket (see the module docstring); chosen at first use."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} channel={self.ref.channel_id}>"

    def keep(self) -> Self:
        """Keep this end beyond the handler it was given to, and finish it yourself.

        An end that arrives in a handler's payload belongs to that invocation: when the handler returns or
        raises, an end it did not finish is closed for it (a reader it stopped reading is released, so its
        writer learns at once; a writer it did not close is aborted, so its reader sees a broken stream).
        A handler that hands the end to a task that goes on streaming after it returns calls ``keep()``
        first. Passing the end on in another call's payload keeps it too. Returns the end.
        """
        self._kept = True
        return self

    def _home_loop(self) -> asyncio.AbstractEventLoop:
        """The loop this end lives on: the first caller's running loop, or the SDK's for sync code."""
        home = self._home
        if home is None:
            home = self._home = running_loop() or self._portal.loop
        elif home.is_closed():
            raise UsageError(f"{LOOP_ENDED} ({self!r})")
        return home

    def _dual(self, coro: Any, *, blocking: bool, on_error: Callable[[BaseException], None] | None = None) -> Any:
        """:func:`~iii.sdk.portal.dual` on this end's loop."""
        try:
            home = self._home_loop()
        except UsageError:
            coro.close()
            raise
        return dual(self._portal, coro, blocking=blocking, on_error=on_error, loop=home)

    async def _on_home(self, coro: Any) -> Any:
        """Await ``coro`` run on this end's loop, from any loop (an end never used runs it here)."""
        home = self._home
        if home is None:
            return await coro
        return await await_on(home, coro)

    # what an invocation does with the ends it was given (see keep)
    def _finished(self) -> bool:
        """Whether the holder has done all it will with this end (read it to the end, closed it, ...)."""
        raise NotImplementedError

    async def _abandon(self, reason: str) -> bool:
        """Finish an end the holder left unfinished. Returns True when it never connected: only the engine
        can then tell its peer (``engine::channels::release``)."""
        raise NotImplementedError

    # subclasses react to frames and the end of the socket
    def _on_data(self, data: bytes, transport: WSTransport) -> None:
        pass

    def _on_text(self, text: str, transport: WSTransport) -> None:
        pass

    def _on_closed(self) -> None:
        pass

    async def _settled(self) -> None:
        """Wait until the calls made on this end have done their I/O (shutdown uses it)."""

    def _record(self, error: BaseException) -> None:
        if self._error is None and isinstance(error, Exception):
            self._error = error

    async def _connect(self) -> _EndSocket:
        """The connected socket, opened on first use (concurrent callers share one attempt)."""
        if self._socket is not None:
            return self._socket
        if self._connecting is None or self._connecting.cancelled():  # cancelled: its loop is ending (see _pump)
            self._connecting = asyncio.ensure_future(self._open())
        return await asyncio.shield(self._connecting)

    async def _open(self) -> _EndSocket:
        listener = _EndSocket(self)
        try:
            await ws_connect(
                lambda: listener, self._url, extra_headers=self._headers or None, max_frame_size=_MAX_FRAME_BYTES
            )
        except WSInvalidStatusError as exc:
            status = int(exc.response.status) if exc.response is not None else None
            body = (exc.raw_body or b"").decode(errors="replace").strip()
            raise self._refused(status, body) from None
        except (OSError, WSError) as exc:
            raise ChannelError(f"cannot connect channel {self.ref.channel_id}: {exc}") from None
        if listener.transport is None:  # picows returns normally when the server hangs up mid-handshake
            raise ChannelError(
                f"cannot connect channel {self.ref.channel_id}: the connection closed during the handshake"
            )
        self._socket = listener
        return listener

    def _refused(self, status: int | None, body: str) -> ChannelRefusedError:
        """The error for an upgrade the engine answered with an HTTP error status."""
        end = f"the {self._direction} end of channel {self.ref.channel_id}"
        if status == 404:
            why = "the channel does not exist or the key is wrong (it may have expired or ended)"
        elif status == 403:
            why = f"the key does not open it ({body})" if body else "the key does not open it"
        else:
            why = f"{body}" if body else "refused"
        return ChannelRefusedError(f"cannot open {end}: {why} (HTTP {status})", status=status, reason=body)

    def _broken(self, socket: _EndSocket, received: int = 0) -> ChannelError:
        """The error for a socket that ended other than cleanly: refused at once (1008), or cut off."""
        code = socket.close_code
        if code == close_codes.POLICY_VIOLATION:  # the upgrade was accepted only to say no, with the reason
            end = f"the {self._direction} end of channel {self.ref.channel_id}"
            why = socket.close_reason or "refused by the engine"
            return ChannelRefusedError(f"cannot open {end}: {why}", code=code, reason=socket.close_reason)
        what = f"code {code}: {socket.close_reason}" if code is not None else "connection lost without a close"
        return ChannelBrokenError(f"channel {self.ref.channel_id} broke ({what})", code, socket.close_reason, received)


class ChannelWriter(_ChannelEnd):
    """The writing end of a channel. Binary data with :meth:`write`, text side-messages with
    :meth:`send_message`, the end with :meth:`close` (the reader then sees a clean end).

    Calls from any thread or loop go into one ordered backlog that a single pump task on the end's loop
    sends; a call waits only when the backlog holds more than ``_BACKLOG_BYTES`` (so a caller on another
    thread does not pay a thread hand-over per chunk). A failure of the stream is raised by the next call.
    """

    _direction = "write"

    def __init__(
        self,
        engine_url: str,
        ref: StreamChannelRef | Mapping[str, Any],
        portal: Portal,
        headers: Mapping[str, str] | None = None,
        terms: EngineTerms | None = None,
    ) -> None:
        super().__init__(engine_url, ref, portal, headers, terms)
        self._state = WriterState.OPEN
        self._backlog: collections.deque[tuple[int, bytes]] = collections.deque()
        self._backlog_bytes = 0
        self._guard = threading.Lock()
        self._room = threading.Condition(self._guard)
        self._room_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._pumping = False
        self._close_sent = False
        self._sent_offset = 0
        """How much of the backlog's first item (a data item) has been sent."""
        self._pump_idle: asyncio.Event | None = None
        self._closed: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.stream = WritableStream(self)

    # --- public API ------------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview | str) -> Any:
        """Send ``data`` (in 64 KiB frames). Backpressured: blocks in sync code, awaitable in async code.

        ``data`` is bytes-like (``bytes``, ``bytearray``, ``memoryview``, any buffer) or a ``str``, sent as its
        UTF-8 bytes (as Node's ``stream.write`` does). Anything else raises :class:`UsageError`.
        """
        payload = _as_bytes(data, "write")
        self._check_open("write")
        return self._submit(_DATA, payload)

    def send_message(self, message: str) -> Any:
        """Send a text side-message, in order with the data. Fire-and-forget (awaitable in async code)."""
        self._check_open("send_message")
        return self._submit(_TEXT, message.encode())

    async def send_message_async(self, message: str) -> None:
        """Send a text side-message (waits only while the backlog is full)."""
        await self._await(self.send_message(message))

    def close(self) -> Any:
        """End the stream cleanly (after everything written before). Fire-and-forget; idempotent.

        In async code the returned awaitable completes when the engine has the end.
        """
        if self._state is WriterState.BROKEN and self._error is not None:  # the end can never be clean
            if not self._closed.done():
                self._closed.set_exception(self._error)
            raise self._error
        if self._state is WriterState.OPEN:
            self._state = writer_after(self._state, WriterEvent.CLOSE)
            try:
                self._enqueue(_CLOSE, b"")
            except Exception as error:  # the stream broke before: the end can never be clean
                if not self._closed.done():
                    self._closed.set_exception(error)
                raise
        running = running_loop()
        return asyncio.wrap_future(self._closed, loop=running) if running is not None else None

    async def close_async(self) -> None:
        """End the stream cleanly and wait until the engine has it."""
        await self._await(self.close())

    # --- the backlog -----------------------------------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self._state is WriterState.BROKEN:
            self._raise_error()  # the stream was cut: say why, not that the call is misuse
        if self._state not in WRITER_ACCEPTS_DATA:
            raise UsageError(f"{what}() on a {self._state.value} ChannelWriter (channel {self.ref.channel_id})")

    async def _await(self, pending: Any) -> None:
        if pending is not None:
            await pending

    def _submit(self, kind: int, payload: bytes) -> Any:
        """Queue an item; wait (sync) or return an awaitable that waits while the backlog is full."""
        crowded = self._enqueue(kind, payload)
        running = running_loop()
        if running is None:
            if crowded:
                with self._room:
                    self._room.wait_for(lambda: self._backlog_bytes <= _BACKLOG_BYTES or self._error is not None)
                self._raise_error()
            return None
        room = running.create_future()
        with self._guard:
            if self._backlog_bytes <= _BACKLOG_BYTES or self._error is not None:
                room.set_result(None)
            else:
                self._room_waiters.append((running, room))
        return room

    def _enqueue(self, kind: int, payload: bytes) -> bool:
        """Add an item and make sure the pump runs; returns whether the backlog is now over budget."""
        self._portal.ensure_open()
        socket = self._socket
        if socket is not None and socket.close_code is not None and not self._terms.is_clean_end(socket.close_code):
            self._record(self._broken(socket))  # the engine ended the stream (its reader left, say): say so now
        with self._guard:
            self._raise_error()
            self._backlog.append((kind, payload))
            self._backlog_bytes += len(payload)
            start, self._pumping = not self._pumping, True
            crowded = self._backlog_bytes > _BACKLOG_BYTES
        if start:
            home = self._home_loop()
            if running_loop() is home:
                self._spawn_pump()
            elif not inbox(home).post(self._spawn_pump):
                with self._guard:
                    self._pumping = False
                raise UsageError(f"{LOOP_ENDED} ({self!r})")
        return crowded

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _spawn_pump(self) -> None:
        if self._pump_idle is None:
            self._pump_idle = asyncio.Event()
        self._pump_idle.clear()
        task = asyncio.get_running_loop().create_task(self._pump())
        _PUMPS.add(task)
        task.add_done_callback(_PUMPS.discard)

    async def _pump(self) -> None:
        """Send the backlog in order, on the end's loop, until it is empty.

        Cancelled (its loop is ending: ``asyncio.run`` cancels every task as it returns), it goes on sending
        what was written, for ``_FLUSH_AT_LOOP_END_S`` at most, so that a program may write, close and end.
        """
        try:
            await self._send_backlog()
        except asyncio.CancelledError:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_FLUSH_AT_LOOP_END_S):
                    await self._send_backlog()
            with self._guard:
                if self._backlog:  # not all of it could be sent: the stream is cut off
                    self._record(ChannelError(f"channel {self.ref.channel_id}: its event loop ended mid-stream"))
                    self._backlog.clear()
                    self._backlog_bytes = 0
                    self._wake_room()
                self._pumping = False
            raise
        finally:
            assert self._pump_idle is not None
            self._pump_idle.set()

    async def _send_backlog(self) -> None:
        """Send items until the backlog is empty. An item leaves the backlog only once it is wholly sent (a data
        item's progress is kept in ``_sent_offset``), so a run cut off by cancellation can be resumed."""
        try:
            socket = await self._connect()
            while True:
                with self._guard:
                    if not self._backlog:
                        self._pumping = False
                        self._wake_room()
                        return
                    kind, payload = self._backlog[0]
                if kind == _DATA:
                    # An item's bytes leave the backlog's count as they go to the socket, so a caller waiting
                    # for room waits until all but _BACKLOG_BYTES of what it wrote has been handed over.
                    view = memoryview(payload)
                    while self._sent_offset < len(view):
                        await self._room_in(socket)
                        frame = view[self._sent_offset : self._sent_offset + FRAME_BYTES]
                        socket.transport.send(WSMsgType.BINARY, frame)  # type: ignore[union-attr]
                        self._sent_offset += len(frame)
                        self._sent(len(frame))
                elif kind == _TEXT:
                    await self._room_in(socket)
                    socket.transport.send(WSMsgType.TEXT, payload)  # type: ignore[union-attr]
                    self._sent(len(payload))
                elif kind == _CLOSE:
                    await self._finish(socket)
                else:
                    self._sent(len(payload))
                    self._abort(socket, payload.decode())
                with self._guard:
                    self._backlog.popleft()
                    self._sent_offset = 0
        except Exception as error:
            close_requested = self._state is not WriterState.OPEN
            with self._guard:
                self._record(error)
                self._backlog.clear()
                self._sent_offset = 0
                self._backlog_bytes = 0
                self._pumping = False
                self._wake_room()
            if close_requested and not self._closed.done():
                self._closed.set_exception(error)

    def _sent(self, size: int) -> None:
        with self._guard:
            self._backlog_bytes -= size
            if self._backlog_bytes <= _BACKLOG_BYTES:
                self._wake_room()

    @property
    def _unsent(self) -> int:
        """Bytes written but not yet handed to the socket."""
        return self._backlog_bytes

    async def _room_in(self, socket: _EndSocket) -> None:
        if not socket.writable.is_set():
            await socket.writable.wait()
        if socket.closed.is_set() or socket.close_code is not None:
            raise self._broken(socket)

    async def _finish(self, socket: _EndSocket) -> None:
        """Close cleanly, after everything before; the engine's answer tells whether the stream held."""
        transport = socket.transport
        assert transport is not None
        if not socket.closed.is_set():
            if not self._close_sent:  # a resumed pump (see _pump) waits again without closing twice
                self._close_sent = True
                transport.send_close(WSCloseCode.OK)
            try:
                await asyncio.wait_for(socket.closed.wait(), _CLOSE_WAIT_S)
            except TimeoutError:
                transport.disconnect()
        if socket.close_code is not None and not self._terms.is_clean_end(socket.close_code):
            raise self._broken(socket)
        self._state = writer_after(self._state, WriterEvent.DELIVERED)
        if not self._closed.done():
            self._closed.set_result(None)

    def _abort(self, socket: _EndSocket, reason: str) -> None:
        """End the stream as broken: the reader gets what was sent, then a non-clean end (4001)."""
        transport = socket.transport
        if transport is not None and not transport.is_disconnected:
            transport.send_close(WSCloseCode(_ABORTED_CODE), reason.encode()[:120])
            transport.disconnect()
        self._state = writer_after(self._state, WriterEvent.DELIVERED)
        if not self._closed.done():
            self._closed.set_exception(ChannelError(f"channel {self.ref.channel_id} was aborted: {reason}"))
            self._closed.exception()  # retrieved: nobody awaits an aborted writer's close

    def _finished(self) -> bool:
        return self._state in WRITER_FINISHED

    def _record(self, error: BaseException) -> None:
        super()._record(error)
        self._state = writer_after(self._state, WriterEvent.BREAK)

    async def _abandon(self, reason: str) -> bool:
        # Later calls are misuse: the invocation that owned this end is over.
        self._state = writer_after(self._state, WriterEvent.ABORT)
        if self._socket is None and self._connecting is None and not self._pumping:
            return True
        try:
            self._enqueue(_ABORT, reason.encode())
        except Exception:  # already broken: the reader knows
            return False
        await self._settled()
        return False

    def _wake_room(self) -> None:
        """Release callers waiting for room (called with the guard held)."""
        self._room.notify_all()
        waiters, self._room_waiters = self._room_waiters, []
        for loop, room in waiters:
            wake(loop, room)

    async def _settled(self) -> None:
        if self._pumping and self._pump_idle is not None:
            await self._on_home(self._pump_idle.wait())


class WritableStream:
    """Node-style ``writer.stream``: ``write(data)`` and ``end(data=None)``, both fire-and-forget."""

    def __init__(self, writer: ChannelWriter) -> None:
        self._writer = writer

    def write(self, data: bytes | bytearray | memoryview | str) -> Any:
        """Queue ``data`` (bytes-like, or ``str`` as UTF-8) after earlier calls; returns at once unless the
        writer's backlog is full."""
        payload = _as_bytes(data, "stream.write")
        self._writer._check_open("stream.write")
        return self._writer._submit(_DATA, payload)

    def end(self, data: bytes | bytearray | memoryview | str | None = None) -> Any:
        """Write ``data`` if given, then end the stream. Fire-and-forget."""
        if data is not None:
            self.write(data)
        return self._writer.close()


class ChannelReader(_ChannelEnd):
    """The reading end of a channel: ``async for chunk in reader``, :meth:`read_all`, :meth:`on_message`.

    Text side-messages go to the callbacks of :meth:`on_message` in stream order: a message written
    between two chunks is dispatched after the first chunk is read and before the second is.
    Callbacks run where the reader is read:

    * ``read_all()`` in plain sync code (a ``def`` handler, a script): in the thread that called it, never
      on the SDK's loop. A callback may block (only this reader waits, and the data after the message is
      not taken meanwhile) and its SDK calls follow the sync rule (``trigger`` blocks and returns the value).
    * ``async for`` or ``await read_all()``: in the thread of the loop that reads (the SDK loop in an
      ``async def`` handler), so a callback must not block, and its calls return awaitables.

    An ``async def`` callback is scheduled, not awaited: on the loop that reads, or on the SDK loop for a
    reader read from sync code. An end can be read once: iterating again, or after :meth:`read_all`, raises
    :class:`UsageError`.
    """

    _direction = "read"

    def __init__(
        self,
        engine_url: str,
        ref: StreamChannelRef | Mapping[str, Any],
        portal: Portal,
        headers: Mapping[str, str] | None = None,
        terms: EngineTerms | None = None,
    ) -> None:
        super().__init__(engine_url, ref, portal, headers, terms)
        self._items: collections.deque[bytes | str] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        """A consumer on another loop waiting for the next item."""
        self._callbacks: list[Callable[[str], Any]] = []
        self._callback_tasks: set[asyncio.Future[Any]] = set()
        self._ended = False
        """The stream has ended (its socket closed): no more items will come."""
        self._state = ReaderState.UNREAD
        self._taken = False
        self._paused = False
        self._received = 0
        self.stream = self

    # --- public API ------------------------------------------------------------------------------------

    def on_message(self, callback: Callable[[str], Any]) -> None:
        """Call ``callback(text)`` for every text side-message, in stream order, in the thread that reads
        (see the class docstring); ``async def`` callbacks are scheduled. Messages read before it is registered
        are not given to it."""
        self._callbacks.append(callback)

    def read_all(self) -> Any:
        """Everything until the writer ends the stream, as ``bytes``. Blocks in sync code; awaitable in async.

        Raises :class:`ChannelBrokenError` if the stream breaks (``received`` tells how much had arrived).
        """
        self._take("read_all")
        if running_loop() is None:
            return self._read_all_here()
        return self._dual(self._read_all(), blocking=True)

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._take("async iteration")
        return self._iterate()

    async def close_async(self) -> None:
        """Stop reading early; the writer's next call fails (its reader went away)."""
        await self._on_home(self._close())

    def close(self) -> Any:
        """Stop reading early. Fire-and-forget; nothing to do after the client's shutdown."""
        if self._portal.stopped:
            return None
        return self._dual(self._close(), blocking=False, on_error=self._record)

    # --- internals -------------------------------------------------------------------------------------

    def _take(self, how: str) -> None:
        if self._taken:
            raise UsageError(f"{how}: this ChannelReader (channel {self.ref.channel_id}) has already been read")
        self._state = reader_after(self._state, ReaderEvent.TAKE, taken=False)
        self._taken = True

    async def _iterate(self) -> AsyncIterator[bytes]:
        home = self._home_loop()
        if asyncio.get_running_loop() is home:
            while (chunk := await self._next()) is not None:
                yield chunk
            return
        # From another loop, take what has arrived straight from the queue (a deque is safe between two
        # threads) and hand over to the end's loop only to wait when it is empty.
        socket = await await_on(home, self._connect())
        loop = asyncio.get_running_loop()
        items = self._items
        while True:
            if items:
                item = items.popleft()
                if self._paused and len(items) <= _READ_LOW_FRAMES:
                    inbox(home).post(self._resume_if_drained)
                if isinstance(item, bytes):
                    yield item
                else:
                    self._dispatch(item)
            elif self._ended:
                if self._terms.is_clean_end(socket.close_code):
                    return
                raise self._broken(socket, self._received)
            else:
                arrived = loop.create_future()
                self._waiter = (loop, arrived)
                if items or self._ended:  # arrived meanwhile: the wake-up may have missed the waiter
                    self._waiter = None
                    continue
                await arrived

    async def _read_all(self) -> bytes:
        parts = []
        while (chunk := await self._next()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    def _read_all_here(self) -> bytes:
        """``read_all`` in plain sync code: the SDK loop collects the data, and hands over to this thread at
        each text message, whose callbacks run here (so they may block, and their calls block and return
        values) before the loop takes the data after it. A stream without messages is one hand-over."""
        parts: list[bytes] = []
        while (text := self._dual(self._read_until_message(parts), blocking=True)) is not None:
            self._dispatch(text)
        return b"".join(parts)

    async def _read_until_message(self, parts: list[bytes]) -> str | None:
        """Append chunks to ``parts`` until a text message that has callbacks (returned, not dispatched) or the
        clean end (None); raises ChannelBrokenError at a broken end."""
        while (item := await self._next_item()) is not None:
            if isinstance(item, bytes):
                parts.append(item)
            elif self._callbacks:
                return item
        return None

    async def _next(self) -> bytes | None:
        """The next chunk, or None at a clean end; raises ChannelBrokenError at a broken one. Text messages
        before it are dispatched here, on the loop that reads."""
        while (item := await self._next_item()) is not None:
            if isinstance(item, bytes):
                return item
            self._dispatch(item)
        return None

    async def _next_item(self) -> bytes | str | None:
        """The next chunk or text message, or None at a clean end; raises ChannelBrokenError at a broken one."""
        socket = await self._connect()
        while not self._items:
            if self._ended:
                if self._terms.is_clean_end(socket.close_code):
                    return None
                raise self._broken(socket, self._received)
            if self._arrived is None:
                self._arrived = asyncio.Event()
            self._arrived.clear()
            await self._arrived.wait()
        item = self._items.popleft()
        self._resume_if_drained()
        return item

    def _resume_if_drained(self) -> None:
        socket = self._socket
        if (
            self._paused
            and len(self._items) <= _READ_LOW_FRAMES
            and socket is not None
            and socket.transport is not None
        ):
            self._paused = False
            socket.transport.underlying_transport.resume_reading()

    async def _close(self) -> None:
        self._state = reader_after(self._state, ReaderEvent.RELEASE, taken=self._taken)
        if self._socket is None and self._connecting is not None:
            with contextlib.suppress(Exception):
                await self._connect()  # in flight: close it once it is open
        if self._socket is not None and self._socket.transport is not None and not self._ended:
            self._socket.transport.send_close(WSCloseCode.OK)
            self._socket.transport.disconnect()

    def _finished(self) -> bool:
        return self._state in READER_FINISHED

    async def _abandon(self, reason: str) -> bool:
        if self._socket is None and self._connecting is None:
            self._state = reader_after(self._state, ReaderEvent.RELEASE, taken=self._taken)
            return True
        await self._on_home(self._close())
        return False

    def _on_data(self, data: bytes, transport: WSTransport) -> None:
        self._received += len(data)
        self._queue(data, transport)

    def _on_text(self, text: str, transport: WSTransport) -> None:
        self._queue(text, transport)

    def _queue(self, item: bytes | str, transport: WSTransport) -> None:
        self._items.append(item)
        if len(self._items) >= _READ_HIGH_FRAMES and not self._paused:
            self._paused = True
            transport.underlying_transport.pause_reading()
        self._wake()

    def _dispatch(self, text: str) -> None:
        """Call the callbacks in this thread; an awaitable one returns is scheduled on the loop running here,
        or on the SDK loop when none runs here (sync code)."""
        for callback in self._callbacks:
            try:
                result = callback(text)
                if inspect.isawaitable(result):
                    if running_loop() is None:
                        self._portal.submit(_awaited(result)).add_done_callback(self._callback_failed)
                    else:
                        task = asyncio.ensure_future(result)
                        self._callback_tasks.add(task)
                        task.add_done_callback(self._callback_tasks.discard)
            except Exception:
                log.exception("on_message callback failed (channel %s)", self.ref.channel_id)

    def _callback_failed(self, done: concurrent.futures.Future[Any]) -> None:
        if not done.cancelled() and (error := done.exception()) is not None:
            log.error("on_message callback failed (channel %s)", self.ref.channel_id, exc_info=error)

    def _on_closed(self) -> None:
        self._ended = True
        self._state = reader_after(self._state, ReaderEvent.END, taken=self._taken)
        self._wake()

    def _wake(self) -> None:
        if self._arrived is not None:
            self._arrived.set()
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            wake(*waiter)


def _as_bytes(data: object, what: str) -> bytes:
    """What ``write`` sends for ``data``: a bytes-like object's bytes, a ``str``'s UTF-8 bytes."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    try:
        return bytes(memoryview(data))  # type: ignore[arg-type]  # any buffer; memoryview refuses the rest
    except TypeError:
        raise UsageError(f"{what}() takes bytes, bytearray, memoryview or str, not {type(data).__name__}") from None


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    """A coroutine that awaits ``awaitable`` (what the SDK loop can run of any awaitable)."""
    return await awaitable


@dataclass
class Channel:
    """A new channel: the local ends, and the refs to hand to other functions."""

    writer: ChannelWriter
    reader: ChannelReader
    writer_ref: StreamChannelRef
    reader_ref: StreamChannelRef
