"""The states of a channel end in the engine, and every transition between them, in one table.

Each of a channel's two ends, the writer and the reader, lives the same way::

    WAITING --take--> RESERVED --connect--> OPEN --end--> DONE

``take``: a socket presented the end's key while the end was waiting, and is completing its handshake;
``connect``: that socket is bound to the end; ``end``: the end's own connection finished (the writer's stream
ended, deliberately or not; the reader left, or was sent the end of the stream). An end also finishes when
its holder gives it up before it connected (``release``), or when the engine cuts it off on account of
something else (``cut``: the other end went away, the channel expired, the engine is shutting down); a cut
may reach an end in any state, a finished one included, and leaves it finished.

``DONE`` is terminal. Any pair the table lacks is a bug in the engine, not bad input: :func:`end_after`
raises :class:`EndStateError` for it. Pure: no I/O, tested without sockets
(tests/engine/test_channel_end_states.py); :mod:`iii.engine.channels` changes an end's state only through
:func:`end_after`.
"""

from __future__ import annotations

import enum
from typing import Final


class EndState(enum.StrEnum):
    """Where one end of a channel is; the value is what the channel listing shows."""

    WAITING = "waiting"
    """Not connected yet: its key still opens it."""
    RESERVED = "reserved"
    """A socket presented the key and is completing its handshake."""
    OPEN = "open"
    """Connected."""
    DONE = "done"
    """Finished (closed, lost, released, expired or cut off)."""


class EndEvent(enum.Enum):
    TAKE = "take"
    """A socket presented the end's key (the key checked out and the end was waiting)."""
    CONNECT = "connect"
    """The socket that took the end completed its handshake and is bound to it."""
    END = "end"
    """The end's own connection finished: the writer's stream ended (cleanly or not), the reader closed or
    disconnected, or the reader was sent the end of the stream."""
    RELEASE = "release"
    """The holder of an end that never connected gives it up (the handler it was given to returned)."""
    CUT = "cut"
    """The engine finishes the end on account of something else: the other end went away, the channel
    expired, or the engine is shutting down."""


_S = EndState
_E = EndEvent
END_TRANSITIONS: Final[dict[tuple[EndState, EndEvent], EndState]] = {
    (_S.WAITING, _E.TAKE): _S.RESERVED,
    (_S.WAITING, _E.RELEASE): _S.DONE,
    (_S.WAITING, _E.CUT): _S.DONE,
    (_S.RESERVED, _E.CONNECT): _S.OPEN,
    (_S.RESERVED, _E.CUT): _S.DONE,  # the reader left, or the channel expired, during the handshake
    (_S.OPEN, _E.END): _S.DONE,
    (_S.OPEN, _E.CUT): _S.DONE,
    (_S.DONE, _E.CUT): _S.DONE,  # cutting a channel off finishes whichever end has not finished yet
}
"""Every legal (state, event) → state; anything else raises :class:`EndStateError`."""

TAKEABLE: Final = frozenset({EndState.WAITING})
"""The end has not been taken: its key still opens it and its holder can still release it."""
CONNECTED: Final = frozenset({EndState.OPEN})
"""A socket (or one of the engine's own ends) is bound to the end: frames and a close can reach it."""
FINISHED: Final = frozenset({EndState.DONE})
"""The end is over for good: nothing reaches it and no event but a cut applies."""
SETTLED: Final = CONNECTED | FINISHED
"""No socket is awaited for the end any more (a reserved end still awaits its handshake: the TTL applies)."""


class EndStateError(RuntimeError):
    """A transition the table does not allow: the engine asked an end to do what its state forbids."""


def end_after(state: EndState, event: EndEvent) -> EndState:
    """The state an end in ``state`` is in after ``event``; :class:`EndStateError` if the table lacks the pair."""
    following = END_TRANSITIONS.get((state, event))
    if following is None:
        raise EndStateError(f"a channel end that is {state.value} cannot {event.value}")
    return following
