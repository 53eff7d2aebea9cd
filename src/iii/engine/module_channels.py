"""Channels for modules inside the engine: the ends a module keeps are the engine's own.

:meth:`InProcessHost.create_channel <iii.engine.module_host.InProcessHost.create_channel>` creates a channel
on the core's :class:`~iii.engine.channels.ChannelManager`; the end the module keeps is a plain object
implementing :class:`~iii.engine.channels.ChannelEnd`, attached to the channel like a socket, so the relay
treats it exactly as it treats sockets, with the same backpressure and close codes, and no socket or extra
copy is involved:

* :class:`_WriterEnd` is held back by the channel (``pause_reading``) while the channel's buffer is full;
  :meth:`InProcessWriter.drain` waits for it to be let go;
* :class:`_ReaderEnd` says it cannot take more (``write_paused``) while ``_READER_HIGH_BYTES`` of data wait
  for the module to read them, and tells the channel when it can again. A read is a future: the module may
  await it or give it a callback (no task needed to watch a stream).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import Final

from iii.engine.channels import Channel, ChannelManager, FrameKind, Role
from iii.errors import ChannelBrokenError
from iii.protocol import close_codes

FRAME_BYTES: Final = 64 * 1024
"""A module's writes go into the channel in frames of at most this size."""
_READER_HIGH_BYTES: Final = 1024 * 1024
"""Data held for the module before the channel's writer is held back."""
_READER_LOW_BYTES: Final = 256 * 1024


def _ref(channel_id: str, key: str, direction: str) -> dict[str, str]:
    return {"channel_id": channel_id, "access_key": key, "direction": direction}


class InProcessChannel:
    """A :class:`~iii.modules.api.ModuleChannel` on the core's channel manager."""

    def __init__(self, manager: ChannelManager, buffer_frames: int) -> None:
        self._manager = manager
        self._channel = manager.create(buffer_frames, None)
        channel = self._channel
        self.writer_ref: Mapping[str, str] = _ref(channel.channel_id, channel.writer_key, "write")
        self.reader_ref: Mapping[str, str] = _ref(channel.channel_id, channel.reader_key, "read")

    def writer(self) -> InProcessWriter:
        end = _WriterEnd(self._channel)
        self._manager.take(self._channel, Role.WRITER)
        self._channel.attach(Role.WRITER, end)
        return InProcessWriter(end)

    def reader(self) -> InProcessReader:
        end = _ReaderEnd(self._channel)
        self._manager.take(self._channel, Role.READER)
        self._channel.attach(Role.READER, end)
        return InProcessReader(end)

    def release(self, reason: str) -> None:
        # Channel.release leaves connected and finished ends alone: only ends still waiting for a taker go.
        self._channel.release(Role.READER, reason)
        self._channel.release(Role.WRITER, reason)


class _WriterEnd:
    """The channel's view of a module's writer: it receives nothing, and is held back or cut off."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.room = asyncio.Event()
        self.room.set()
        self.cut: tuple[int, str] | None = None
        """Set when the channel closed this end (its reader went away, or the channel was cut off)."""

    @property
    def write_paused(self) -> bool:
        return False

    def send_frame(self, kind: FrameKind, payload: bytes | memoryview, fin: bool) -> None:
        pass  # a writer end receives nothing

    def close(self, code: int, reason: str) -> None:
        if self.cut is None:
            self.cut = (code, reason)
        self.room.set()

    def pause_reading(self) -> None:
        self.room.clear()

    def resume_reading(self) -> None:
        self.room.set()

    def hung_up(self) -> bool:
        return False  # the module is in this process: it never hangs up unnoticed


class InProcessWriter:
    """A :class:`~iii.modules.api.ModuleWriter` feeding the channel directly."""

    def __init__(self, end: _WriterEnd) -> None:
        self._end = end
        self._channel = end.channel

    @property
    def cut(self) -> bool:
        return self._end.cut is not None

    def write(self, data: bytes) -> None:
        if len(data) <= FRAME_BYTES:
            self._channel.on_writer_frame(FrameKind.BINARY, data, True)
            return
        view = memoryview(data)
        for offset in range(0, len(view), FRAME_BYTES):
            self._channel.on_writer_frame(FrameKind.BINARY, view[offset : offset + FRAME_BYTES], True)

    async def drain(self) -> None:
        room = self._end.room
        if not room.is_set():
            await room.wait()

    def close(self) -> None:
        self._channel.on_writer_end(close_codes.NORMAL, "the stream is complete")

    def abort(self, reason: str) -> None:
        self._channel.on_writer_end(close_codes.WRITER_LOST, reason)


class _ReaderEnd:
    """The channel's view of a module's reader: frames are queued for :meth:`InProcessReader.read`, or handed to the
    read waiting for them."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.items: deque[bytes | str] = deque()
        self.buffered = 0
        self.stalled = False
        self.end: tuple[int, str] | None = None
        self.waiter: asyncio.Future[bytes | str | None] | None = None
        """The read waiting for the next item."""
        self._text: list[bytes] | None = None
        """Fragments of a text message in progress."""

    @property
    def write_paused(self) -> bool:
        return self.buffered >= _READER_HIGH_BYTES

    def send_frame(self, kind: FrameKind, payload: bytes | memoryview, fin: bool) -> None:
        if kind is FrameKind.TEXT or (kind is FrameKind.CONTINUATION and self._text is not None):
            parts = self._text if self._text is not None else []
            parts.append(bytes(payload))
            self._text = None if fin else parts
            if fin:
                self.items.append(b"".join(parts).decode(errors="replace"))
                self.hand_over()
            return
        self.items.append(bytes(payload))
        self.buffered += len(payload)
        if self.buffered >= _READER_HIGH_BYTES:
            self.stalled = True
        self.hand_over()

    def close(self, code: int, reason: str) -> None:
        if self.end is None:
            self.end = (code, reason)
            self.hand_over()

    def pause_reading(self) -> None:
        pass  # the channel holds back writers only

    def resume_reading(self) -> None:
        pass

    def hung_up(self) -> bool:
        return False

    def hand_over(self) -> None:
        """Settle the waiting read, if any, with the next item or the end."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():  # a read cancelled meanwhile takes nothing
                self.settle(waiter)

    def settle(self, read: asyncio.Future[bytes | str | None]) -> None:
        """Give ``read`` the next item, or the end; leave it pending (as the waiter) if there is neither."""
        items = self.items
        if items:
            item = items.popleft()
            if isinstance(item, bytes):
                self.buffered -= len(item)
                if self.stalled and self.buffered <= _READER_LOW_BYTES:
                    self.stalled = False
                    self.channel.on_reader_writable()
            read.set_result(item)
        elif self.end is not None:
            code, reason = self.end
            if code == close_codes.NORMAL:
                read.set_result(None)
            else:
                message = f"channel {self.channel.channel_id} broke (code {code}: {reason})"
                read.set_exception(ChannelBrokenError(message, code, reason))
        else:
            self.waiter = read


class InProcessReader:
    """A :class:`~iii.modules.api.ModuleReader` taking frames straight from the relay; a read is a future, settled
    when the item arrives (at once if one is queued)."""

    def __init__(self, end: _ReaderEnd) -> None:
        self._end = end

    def read(self) -> asyncio.Future[bytes | str | None]:
        read: asyncio.Future[bytes | str | None] = asyncio.get_running_loop().create_future()
        self._end.settle(read)
        return read

    def close(self, reason: str) -> None:
        end = self._end
        if end.end is None:
            end.end = (close_codes.READER_LOST, reason)
            end.items.clear()
            end.buffered = 0
            end.hand_over()
        end.channel.on_reader_gone(reason)
