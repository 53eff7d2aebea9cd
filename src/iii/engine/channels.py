"""Data channels: creation, the relay between a writer socket and a reader socket, and expiry.

A channel is a bounded queue between its two ends. Frames from the writer go straight to the reader
while the reader's socket can take them, and into the queue otherwise; when the queue holds
``buffer_frames`` frames or ``buffer_bytes`` bytes, the engine stops reading the writer's socket, so TCP
pushes back on the writer. Nothing here is unbounded.

Ends are reached through :class:`ChannelEnd`, implemented by the socket layer, so this module holds the
whole relay and can be tested without sockets. Each end is ``waiting``, ``reserved`` (a socket presented its
key), ``open`` or ``done``; those states and every legal move between them are one table in
:mod:`iii.engine.channel_states`, and an end's state changes only through it (:meth:`Channel._move`), so a
move the table lacks raises instead of passing unnoticed. The promises:

* the reader sees close code 1000 only when the writer ended the stream deliberately; a writer that
  vanished, aborted, or was cut off by shutdown or expiry gives the reader another code and a reason,
  after whatever data did arrive;
* a reader that goes away fails the writer (close ``READER_LOST``);
* each end has its own key and can be taken once; a finished channel is forgotten, so its keys open
  nothing any more;
* an end that never connects expires after the TTL, and the other end is told;
* every reader can read what any writer sent: data reaches readers in binary frames of at most
  :data:`READER_FRAME_BYTES` (a writer's larger frame is cut into slices of it, a fragmented binary message
  into whole frames), whatever the writer sent; text messages pass as they came.
"""

from __future__ import annotations

import enum
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol

from iii.engine.channel_states import (
    CONNECTED,
    FINISHED,
    SETTLED,
    TAKEABLE,
    EndEvent,
    EndState,
    EndStateError,
    end_after,
)
from iii.protocol import close_codes

if TYPE_CHECKING:
    from iii.engine.spans import OpenSpan

READER_FRAME_BYTES: Final = 64 * 1024
"""The largest data frame a reader is sent. Binary data is a byte stream, so frame boundaries carry no
meaning; the official Python reader refuses messages over 1 MiB (websockets' default ``max_size``)."""


def channel_owner(channel_id: str) -> str | None:
    """The id of the engine where a channel lives, from the channel's id (``<engine id>.<uuid>`` in a cluster);
    None for a channel of an engine outside a cluster."""
    owner, dot, _ = channel_id.partition(".")
    return owner if dot and owner else None


class FrameKind(enum.IntEnum):
    """WebSocket opcodes of the frames a channel relays (fragments keep their opcode and fin flag)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2


class ChannelEnd(Protocol):
    """One connected end, as the relay sees it."""

    @property
    def write_paused(self) -> bool:
        """True while the socket's outgoing buffer is full (the reader cannot take more yet)."""

    def send_frame(self, kind: FrameKind, payload: bytes | memoryview, fin: bool) -> None:
        """Send one frame to the peer."""

    def close(self, code: int, reason: str) -> None:
        """Send a close frame and drop the connection; idempotent."""

    def pause_reading(self) -> None:
        """Stop reading the peer's socket (backpressure)."""

    def resume_reading(self) -> None:
        """Read the peer's socket again."""

    def hung_up(self) -> bool:
        """True when the peer has stopped sending for good (its connection closed or reset), though the
        socket is not being read; what it sent before is still unread. False when unknown."""


class Role(enum.Enum):
    WRITER = "write"
    READER = "read"


class KeyCheck(enum.Enum):
    """The outcome of presenting a key for one direction of a channel."""

    OK = "ok"
    NOT_FOUND = "not_found"
    """No such channel, or the key opens neither end."""
    WRONG_DIRECTION = "wrong_direction"
    """The key opens the other end of this channel."""
    TAKEN = "taken"
    """The key is right but that end is already connected or finished."""


class Channel:
    """One channel: its keys, its ends' states, its queue and its counters."""

    __slots__ = (
        "buffer_bytes",
        "buffer_frames",
        "bytes_relayed",
        "channel_id",
        "created_at",
        "end_code",
        "end_reason",
        "frames_relayed",
        "manager",
        "owner_id",
        "queue",
        "queued_bytes",
        "reader",
        "reader_key",
        "reader_state",
        "span",
        "writer",
        "writer_departed",
        "writer_in_binary",
        "writer_key",
        "writer_paused",
        "writer_state",
    )

    def __init__(
        self,
        manager: ChannelManager,
        channel_id: str,
        writer_key: str,
        reader_key: str,
        buffer_frames: int,
        buffer_bytes: int,
        created_at: float,
        owner_id: str | None,
    ) -> None:
        self.manager = manager
        self.channel_id = channel_id
        self.writer_key = writer_key
        self.reader_key = reader_key
        self.buffer_frames = buffer_frames
        self.buffer_bytes = buffer_bytes
        self.created_at = created_at
        self.owner_id = owner_id
        self.writer: ChannelEnd | None = None
        self.reader: ChannelEnd | None = None
        self.writer_state = EndState.WAITING
        self.reader_state = EndState.WAITING
        # Created on first use: an idle channel should cost little.
        self.queue: deque[tuple[FrameKind, bytes, bool]] | None = None
        self.queued_bytes = 0
        self.frames_relayed = 0
        self.bytes_relayed = 0
        self.writer_paused = False
        self.writer_in_binary = False
        """The writer is in the middle of a fragmented binary message (its continuations are data)."""
        self.writer_departed = False
        """The writer hung up while held back: what it sent is read to the end without backpressure (it is
        bounded by the socket's receive buffer), so its end is known now, not when the reader catches up."""
        self.end_code: int | None = None
        self.end_reason = ""
        self.span: OpenSpan | None = None
        """Its lifetime's span, when the engine records spans and it was created in a trace (ended when the
        channel is forgotten)."""

    # --- the writer side -------------------------------------------------------------------------------

    def on_writer_frame(self, kind: FrameKind, payload: bytes | memoryview, fin: bool) -> None:
        """Relay or queue one frame from the writer. ``payload`` is only valid during this call."""
        if self.writer_state not in CONNECTED:
            return
        if kind is not FrameKind.TEXT and (kind is FrameKind.BINARY or self.writer_in_binary):
            # Data: every piece goes out as a whole binary frame (a fragment's boundaries mean nothing).
            self.writer_in_binary = not fin
            if not payload and kind is FrameKind.CONTINUATION:
                return
            kind, fin = FrameKind.BINARY, True
        reader = self.reader
        if reader is not None and not self.queue and not reader.write_paused:
            self._send(reader, kind, payload, fin)
            if reader.write_paused:
                # The reader's socket is full: hold the writer now rather than copying frames into the queue.
                self._pause_writer()
            return
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        queue.append((kind, bytes(payload), fin))
        self.queued_bytes += len(payload)
        if reader is not None or self._buffer_full():
            self._pause_writer()

    def _pause_writer(self) -> None:
        if not self.writer_paused and self.writer is not None and not self.writer_departed:
            self.writer_paused = True
            self.writer.pause_reading()
            self.manager.stalls += 1
            self.manager.held_back.add(self)

    def _resume_writer(self) -> None:
        self.writer_paused = False
        self.manager.held_back.discard(self)
        if self.writer is not None:
            self.writer.resume_reading()

    def read_departed_writer(self) -> None:
        """The held-back writer hung up: read what it left to its end (a close frame, or none: lost)."""
        self.writer_departed = True
        self._resume_writer()

    def on_writer_end(self, code: int, reason: str) -> None:
        """The writer finished: ``NORMAL`` for a deliberate end, another code if it was lost or aborted."""
        self._end_writer(EndEvent.END, code, reason)

    def _end_writer(self, event: EndEvent, code: int, reason: str) -> None:
        """The stream ended (``END``) or its writer was given up (``RELEASE``): the reader gets the end after
        what is queued."""
        if self.writer_state in FINISHED:
            return
        self._move(Role.WRITER, event)
        self.writer = None
        self.manager.held_back.discard(self)
        self.end_code = code
        self.end_reason = reason
        if self.reader_state in CONNECTED:
            self._drain()
        elif self.reader_state in FINISHED:
            self.manager.forget(self)
        # A reader that has not connected yet gets the buffered data and the end when it does.

    # --- the reader side -------------------------------------------------------------------------------

    def on_reader_writable(self) -> None:
        """The reader's socket can take more: send what is queued."""
        if self.reader_state in CONNECTED:
            self._drain()

    def on_reader_gone(self, reason: str) -> None:
        """The reader closed or disconnected before the stream ended: fail the writer, drop the data."""
        if self.reader_state in FINISHED:
            return
        self._move(Role.READER, EndEvent.END)
        self.reader = None
        self.queue = None
        self.queued_bytes = 0
        if self.writer_state in CONNECTED:
            assert self.writer is not None
            self.writer.close(close_codes.READER_LOST, f"reader went away: {reason}")
        self._move(Role.WRITER, EndEvent.CUT)
        self.writer = None
        self.manager.forget(self)

    # --- connection, expiry, shutdown ------------------------------------------------------------------

    def take(self, role: Role) -> None:
        """Reserve the ``role`` end for a socket that presented its key; see :meth:`ChannelManager.take`."""
        self._move(role, EndEvent.TAKE)

    def attach(self, role: Role, end: ChannelEnd) -> None:
        """Bind a connected socket to an end that :meth:`ChannelManager.take` reserved.

        If the channel finished meanwhile (expired, aborted), the socket is closed at once.
        """
        state = self.writer_state if role is Role.WRITER else self.reader_state
        if state is not EndState.RESERVED:
            end.close(close_codes.PEER_NEVER_CONNECTED, "the channel expired before this end connected")
            return
        if role is Role.WRITER and self.reader_state in FINISHED:
            end.close(close_codes.READER_LOST, "the reader was released before this writer connected")
            self._move(Role.WRITER, EndEvent.CUT)
            self.manager.forget(self)
            return
        self._move(role, EndEvent.CONNECT)
        if role is Role.WRITER:
            self.writer = end
            if self.writer_paused:
                end.pause_reading()
        else:
            self.reader = end
        if self.writer_state in SETTLED and self.reader_state in SETTLED:
            self.manager.connected(self)
        if role is Role.READER:
            self._drain()

    def release(self, role: Role, reason: str) -> bool:
        """Finish an end that never connected, on its holder's word (the handler it was given to returned).

        A released reader fails the writer (``READER_LOST``, now if it is connected, else when it connects);
        a released writer ends the stream unclean (``WRITER_RELEASED``: nothing was written). Returns False if
        that end has connected (its socket says how it ends) or has already finished.
        """
        if role is Role.READER:
            if self.reader_state not in TAKEABLE:
                return False
            self._move(Role.READER, EndEvent.RELEASE)
            self.queue = None
            self.queued_bytes = 0
            if self.writer_state in CONNECTED:
                assert self.writer is not None
                self.writer.close(close_codes.READER_LOST, f"the reader was released: {reason}")
                self._move(Role.WRITER, EndEvent.CUT)
                self.writer = None
            if self.writer_state in FINISHED:
                self.manager.forget(self)
            return True  # a writer still to come is told when it attaches
        if self.writer_state not in TAKEABLE:
            return False
        self._end_writer(EndEvent.RELEASE, close_codes.WRITER_RELEASED, f"the writer was released unused: {reason}")
        return True

    def expire(self) -> None:
        """The TTL ran out with an end never connected: tell the other end, then forget the channel."""
        if self.reader is not None:
            self.reader.close(close_codes.PEER_NEVER_CONNECTED, "the writer never connected")
        elif self.writer is not None:
            self.writer.close(close_codes.PEER_NEVER_CONNECTED, "the reader never connected")
        self._cut_off()

    def abort(self, code: int, reason: str) -> None:
        """Cut both ends off (engine shutdown); neither sees a clean end."""
        if self.writer is not None:
            self.writer.close(code, reason)
        if self.reader is not None:
            self.reader.close(code, reason)
        self._cut_off()

    def describe(self, now: float) -> dict[str, Any]:
        """A listing entry: never the keys."""
        return {
            "channel_id": self.channel_id,
            "owner_worker_id": self.owner_id,
            "buffer_size": self.buffer_frames,
            "writer": self.writer_state.value,
            "reader": self.reader_state.value,
            "frames": self.frames_relayed,
            "bytes": self.bytes_relayed,
            "queued_frames": len(self.queue) if self.queue else 0,
            "queued_bytes": self.queued_bytes,
            "writer_paused": self.writer_paused,
            "age_s": round(now - self.created_at, 3),
        }

    # --- internals -------------------------------------------------------------------------------------

    def _move(self, role: Role, event: EndEvent) -> None:
        """Apply ``event`` to the ``role`` end: the only way an end's state changes (the table is in
        :mod:`iii.engine.channel_states`; an event its state does not allow raises :class:`EndStateError`)."""
        try:
            if role is Role.WRITER:
                self.writer_state = end_after(self.writer_state, event)
            else:
                self.reader_state = end_after(self.reader_state, event)
        except EndStateError as exc:
            exc.add_note(f"the {role.name.lower()} end of channel {self.channel_id}")
            raise

    def _cut_off(self) -> None:
        """Finish both ends on the engine's word (expiry, shutdown), drop the queue and forget the channel;
        their sockets, if any, have been closed."""
        self._move(Role.WRITER, EndEvent.CUT)
        self._move(Role.READER, EndEvent.CUT)
        self.writer = self.reader = None
        self.queue = None
        self.queued_bytes = 0
        self.manager.forget(self)

    def _buffer_full(self) -> bool:
        queue = self.queue
        return queue is not None and (len(queue) >= self.buffer_frames or self.queued_bytes >= self.buffer_bytes)

    def _drain(self) -> None:
        reader = self.reader
        if reader is None:
            return
        queue = self.queue
        while queue and not reader.write_paused:
            kind, payload, fin = queue.popleft()
            self.queued_bytes -= len(payload)
            self._send(reader, kind, payload, fin)
        if self.writer_paused and not queue and not reader.write_paused:
            # Everything queued went out and the reader's socket has room: let the writer go on.
            self._resume_writer()
        if not queue and self.writer_state in FINISHED and self.end_code is not None:
            reader.close(self.end_code, self.end_reason)
            self.reader = None
            self._move(Role.READER, EndEvent.END)
            self.manager.forget(self)

    def _send(self, reader: ChannelEnd, kind: FrameKind, payload: bytes | memoryview, fin: bool) -> None:
        """Send one relayed frame to the reader, a data frame larger than :data:`READER_FRAME_BYTES` in slices."""
        size = len(payload)
        self.bytes_relayed += size
        if size <= READER_FRAME_BYTES or kind is not FrameKind.BINARY:
            reader.send_frame(kind, payload, fin)
            self.frames_relayed += 1
            return
        view = memoryview(payload)  # slices share the writer's buffer: no copy
        for start in range(0, size, READER_FRAME_BYTES):
            reader.send_frame(FrameKind.BINARY, view[start : start + READER_FRAME_BYTES], True)
            self.frames_relayed += 1


class ChannelManager:
    """All live channels of one engine: create, look up by key, expire, list."""

    def __init__(
        self,
        *,
        default_buffer_frames: int,
        max_buffer_frames: int,
        buffer_bytes: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default_buffer_frames = default_buffer_frames
        self.max_buffer_frames = max_buffer_frames
        self.buffer_bytes = buffer_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._channels: dict[str, Channel] = {}
        # Channels with an end not yet connected, oldest first (insertion order), for the TTL sweep.
        self._awaiting: dict[str, Channel] = {}
        self._by_owner: dict[str, set[str]] = {}
        self.created = 0
        self.held_back: set[Channel] = set()
        """Channels whose writer is paused (checked now and then for writers that hung up meanwhile)."""
        self.stalls = 0
        """How many times a writer was paused because its channel's buffer was full."""
        self.finished_bytes = 0
        self.finished_frames = 0
        """What the channels already forgotten relayed (the live ones count their own)."""
        self.id_prefix = ""
        """Put before every new channel id: in a cluster, this engine's id and a dot (``owner_engine_id``)."""

    def __len__(self) -> int:
        return len(self._channels)

    def __iter__(self) -> Iterator[Channel]:
        return iter(list(self._channels.values()))

    def create(self, buffer_frames: int | None, owner_id: str | None) -> Channel:
        """A new channel with fresh, separate keys; ``buffer_frames`` None means the default.

        The size is clamped to 1..max, as the reference engine does.
        """
        size = self.default_buffer_frames if buffer_frames is None else buffer_frames
        size = max(1, min(size, self.max_buffer_frames))
        channel = Channel(
            self,
            self.id_prefix + str(uuid.uuid4()),
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(24),
            size,
            self.buffer_bytes,
            self._clock(),
            owner_id,
        )
        self._channels[channel.channel_id] = channel
        self._awaiting[channel.channel_id] = channel
        if owner_id is not None:
            self._by_owner.setdefault(owner_id, set()).add(channel.channel_id)
        self.created += 1
        return channel

    def relayed(self) -> tuple[int, int]:
        """(bytes, frames) relayed by every channel so far, finished or live."""
        live = self._channels.values()
        return (
            self.finished_bytes + sum(c.bytes_relayed for c in live),
            self.finished_frames + sum(c.frames_relayed for c in live),
        )

    def owned_by(self, owner_id: str) -> int:
        """How many live channels ``owner_id`` created."""
        return len(self._by_owner.get(owner_id, ()))

    def check(self, channel_id: str, key: str, role: Role) -> tuple[KeyCheck, Channel | None]:
        """Whether ``key`` opens the ``role`` end of ``channel_id`` now. Keys are compared in constant time."""
        channel = self._channels.get(channel_id)
        if channel is None:
            return KeyCheck.NOT_FOUND, None
        own, other = (
            (channel.writer_key, channel.reader_key)
            if role is Role.WRITER
            else (channel.reader_key, channel.writer_key)
        )
        if not secrets.compare_digest(key.encode(), own.encode()):
            if secrets.compare_digest(key.encode(), other.encode()):
                return KeyCheck.WRONG_DIRECTION, channel
            return KeyCheck.NOT_FOUND, None
        state = channel.writer_state if role is Role.WRITER else channel.reader_state
        if state not in TAKEABLE:
            return KeyCheck.TAKEN, channel
        return KeyCheck.OK, channel

    def take(self, channel: Channel, role: Role) -> None:
        """Reserve the ``role`` end (after a successful :meth:`check`); the socket attaches later.

        A reserved end still counts as unconnected for the TTL until its socket attaches.
        """
        channel.take(role)

    def connected(self, channel: Channel) -> None:
        """Both ends have connected (or finished): the channel no longer expires."""
        self._awaiting.pop(channel.channel_id, None)

    def read_departed_writers(self) -> list[Channel]:
        """Let every held-back writer that hung up be read to its end; returns their channels."""
        departed = [c for c in self.held_back if c.writer is not None and c.writer.hung_up()]
        for channel in departed:
            channel.read_departed_writer()
        return departed

    def forget(self, channel: Channel) -> None:
        """Remove a finished channel; its keys open nothing afterwards."""
        self.held_back.discard(channel)
        if self._channels.pop(channel.channel_id, None) is not None:
            self.finished_bytes += channel.bytes_relayed
            self.finished_frames += channel.frames_relayed
        self._awaiting.pop(channel.channel_id, None)
        if channel.span is not None:
            _end_span(channel)
        if channel.owner_id is not None:
            owned = self._by_owner.get(channel.owner_id)
            if owned is not None:
                owned.discard(channel.channel_id)
                if not owned:
                    del self._by_owner[channel.owner_id]

    def expire_due(self) -> int:
        """Expire channels whose unconnected end is older than the TTL; returns how many."""
        deadline = self._clock() - self.ttl_s
        due = []
        for channel in self._awaiting.values():
            if channel.created_at > deadline:
                break
            due.append(channel)
        for channel in due:
            channel.expire()
        return len(due)

    def find(self, channel_id: str, key: str) -> tuple[Channel, Role] | None:
        """The channel and the end that ``key`` opens (either direction), or None. Constant-time compares."""
        channel = self._channels.get(channel_id)
        if channel is None:
            return None
        if secrets.compare_digest(key.encode(), channel.writer_key.encode()):
            return channel, Role.WRITER
        if secrets.compare_digest(key.encode(), channel.reader_key.encode()):
            return channel, Role.READER
        return None

    def forget_unconnected_of(self, owner_id: str) -> int:
        """Remove the channels of a departed worker that no one ever connected to; returns how many.

        Its other channels live on (someone is using them) but no longer count as its own.
        """
        owned = [self._channels[channel_id] for channel_id in self._by_owner.pop(owner_id, ())]
        orphans = [c for c in owned if c.writer_state in TAKEABLE and c.reader_state in TAKEABLE]
        for channel in owned:
            channel.owner_id = None
        for channel in orphans:
            self.forget(channel)
        return len(orphans)

    def transfer_owner(self, old_id: str, new_id: str) -> None:
        """Make the channels of ``old_id`` belong to ``new_id`` (a reattaching worker)."""
        moved = self._by_owner.pop(old_id, set())
        for channel_id in moved:
            self._channels[channel_id].owner_id = new_id
        if moved:
            self._by_owner.setdefault(new_id, set()).update(moved)

    def abort_all(self, code: int, reason: str) -> None:
        for channel in list(self._channels.values()):
            channel.abort(code, reason)

    def describe(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [channel.describe(now) for channel in self._channels.values()]


def _end_span(channel: Channel) -> None:
    """End a channel's lifetime span: what it relayed, and how it ended (an error unless its writer ended the
    stream cleanly)."""
    span = channel.span
    assert span is not None
    channel.span = None
    span.set("iii.channel.bytes", str(channel.bytes_relayed))
    span.set("iii.channel.frames", str(channel.frames_relayed))
    if channel.end_code is not None:
        span.set("iii.channel.close_code", str(channel.end_code))
    if channel.end_code == close_codes.NORMAL:
        span.end()
        return
    reason = channel.end_reason or "the channel was cut off before its stream ended"
    span.end((f"channel_{channel.end_code}" if channel.end_code is not None else "channel_cut", reason))
