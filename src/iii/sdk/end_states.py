"""The states of a channel end in the SDK, and every transition between them, in one table each.

A writer's life: ``OPEN`` (writes accepted) → ``CLOSING`` (``close()``: what was written goes out, then the end
of the stream) → ``CLOSED`` (the engine has the end); or ``ABORTING`` (the invocation that owned it ended
without closing it: what was written goes out, then a broken end) → ``ABORTED``; any state before the end can
become ``BROKEN`` (the engine or the network cut the stream). A reader: ``UNREAD`` → ``READING`` (``read_all()``
or iteration, once) → ``ENDED`` (the stream ended, cleanly or not); ``RELEASED`` when its holder closes it
before the end. Pure: no I/O, tested without sockets (tests/sdk/test_end_states.py).
"""

from __future__ import annotations

import enum
from typing import Final

from iii.errors import UsageError


class WriterState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    ABORTING = "aborting"
    CLOSED = "closed"
    ABORTED = "aborted"
    BROKEN = "broken"


class WriterEvent(enum.Enum):
    CLOSE = "close"
    """The holder ends the stream (``close()``, ``stream.end()``)."""
    ABORT = "abort"
    """The invocation that owned the end returned without closing it."""
    DELIVERED = "delivered"
    """The engine confirmed the end (clean), or the abort went out."""
    BREAK = "break"
    """The stream was cut (the reader left, the engine or network failed)."""


_W = WriterState
_WE = WriterEvent
WRITER_TRANSITIONS: Final[dict[tuple[WriterState, WriterEvent], WriterState]] = {
    (_W.OPEN, _WE.CLOSE): _W.CLOSING,
    (_W.OPEN, _WE.ABORT): _W.ABORTING,
    (_W.OPEN, _WE.BREAK): _W.BROKEN,
    (_W.CLOSING, _WE.CLOSE): _W.CLOSING,  # close() is idempotent
    (_W.CLOSING, _WE.DELIVERED): _W.CLOSED,
    (_W.CLOSING, _WE.BREAK): _W.BROKEN,
    (_W.ABORTING, _WE.DELIVERED): _W.ABORTED,
    (_W.ABORTING, _WE.BREAK): _W.ABORTED,  # cut while aborting: the reader sees a broken end either way
    (_W.CLOSED, _WE.CLOSE): _W.CLOSED,
    (_W.BROKEN, _WE.BREAK): _W.BROKEN,
}
"""Every allowed (state, event) → state. Anything else is misuse (writing after close) or a no-op event
arriving late (:func:`writer_after` says which)."""

WRITER_ACCEPTS_DATA: Final = frozenset({WriterState.OPEN})
WRITER_FINISHED: Final = frozenset(WriterState) - {WriterState.OPEN}
"""States in which the holder has done all it will (the invocation leaves such an end alone)."""


def writer_after(state: WriterState, event: WriterEvent) -> WriterState:
    """The state after ``event``. A holder's event the state does not allow raises :class:`UsageError`; a late
    event from the stream (a break after the end) leaves the state as it is."""
    following = WRITER_TRANSITIONS.get((state, event))
    if following is not None:
        return following
    if event in (WriterEvent.CLOSE, WriterEvent.ABORT):
        raise UsageError(f"cannot {event.value} a channel writer that is {state.value}")
    return state


class ReaderState(enum.Enum):
    UNREAD = "unread"
    READING = "reading"
    ENDED = "ended"
    RELEASED = "released"


class ReaderEvent(enum.Enum):
    TAKE = "take"
    """The holder starts reading (``read_all()``, ``async for``): an end can be read once."""
    END = "end"
    """The stream ended (the socket closed, cleanly or not)."""
    RELEASE = "release"
    """The holder stops reading before the end (``close()``), or its invocation ended without reading."""


_R = ReaderState
_RE = ReaderEvent
READER_TRANSITIONS: Final[dict[tuple[ReaderState, ReaderEvent], ReaderState]] = {
    (_R.UNREAD, _RE.TAKE): _R.READING,
    (_R.UNREAD, _RE.END): _R.ENDED,
    (_R.UNREAD, _RE.RELEASE): _R.RELEASED,
    (_R.READING, _RE.END): _R.ENDED,
    (_R.READING, _RE.RELEASE): _R.RELEASED,
    (_R.ENDED, _RE.TAKE): _R.ENDED,  # reading what arrived before the end (once: see reader_after)
    (_R.ENDED, _RE.END): _R.ENDED,
    (_R.ENDED, _RE.RELEASE): _R.ENDED,
    (_R.RELEASED, _RE.END): _R.RELEASED,
    (_R.RELEASED, _RE.RELEASE): _R.RELEASED,
}

READER_FINISHED: Final = frozenset({ReaderState.ENDED, ReaderState.RELEASED})


def reader_after(state: ReaderState, event: ReaderEvent, *, taken: bool) -> ReaderState:
    """The state after ``event``; ``taken`` says whether the end was read before (it can be read once)."""
    if event is ReaderEvent.TAKE and taken:
        raise UsageError("this ChannelReader has already been read")
    following = READER_TRANSITIONS.get((state, event))
    if following is None:
        raise UsageError(f"cannot {event.value} a channel reader that is {state.value}")
    return following
