"""Backpressure between control connections: a connection whose outgoing buffer is full holds back the reading
of the connections that feed it, until it drains.

Both kinds of connection the engine routes calls between share it: a worker's socket
(:class:`~iii.engine.worker_socket.WorkerConnection`) and a link to another engine of a cluster
(:class:`~iii.engine.links.EngineLink`). A connection's reading stays paused while any target it is held for
has a full buffer; the target releases it when its buffer drains, or when it goes away.
"""

from __future__ import annotations

from typing import Any

from picows import WSTransport


class ReadHolds:
    """The bookkeeping of who holds whose reading, mixed into a connection (first among its bases: picows'
    ``WSListener`` has ``pause_writing`` and ``resume_writing`` of its own that do nothing).

    The connection sets ``transport`` (once connected) and ``alive``, and calls :meth:`drop_holds` when it is
    gone; picows calls :meth:`pause_writing` and :meth:`resume_writing` as its outgoing buffer fills and drains.
    """

    transport: WSTransport | None
    alive: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # the connection's other base (its listener) gets the arguments
        self.write_paused = False
        self._holding: set[ReadHolds] = set()
        """Connections whose reading waits for this one's outgoing buffer to drain."""
        self._held_by: set[ReadHolds] = set()
        """Connections whose full buffers keep this one's reading paused."""

    def hold_reading_for(self, target: Any) -> None:
        """Stop reading this connection until ``target``'s outgoing buffer has drained (only a connection's
        buffer ever fills: any other target, such as a module served inside the engine, is ignored)."""
        if not isinstance(target, ReadHolds) or target in self._held_by or not target.write_paused:
            return
        self._held_by.add(target)
        target._holding.add(self)
        if len(self._held_by) == 1 and self.transport is not None:
            self.transport.underlying_transport.pause_reading()

    def _release(self, target: ReadHolds) -> None:
        self._held_by.discard(target)
        if not self._held_by and self.alive and self.transport is not None:
            self.transport.underlying_transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        holding, self._holding = self._holding, set()
        for source in holding:
            source._release(self)

    def drop_holds(self) -> None:
        """The connection is gone: whoever waited on its buffer goes on, and it waits for no one."""
        self.resume_writing()
        for target in self._held_by:
            target._holding.discard(self)
        self._held_by.clear()
