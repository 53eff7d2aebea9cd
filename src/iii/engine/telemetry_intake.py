"""The ``/otel`` sockets' messages on their way to the module that keeps them, at a bounded cost per turn of the
engine's loop, so that a flood of telemetry cannot starve the calls the loop also serves.

Decoding a telemetry message costs the loop some microseconds; a socket's read hands over every message of the
chunk it read, and ten SDKs flooding their logs keep ten sockets readable every turn. Delivered as they come, they
would hold the loop for milliseconds per turn and a call waiting behind them for as long, every hop.

:class:`TelemetryIntake` therefore delivers at most a budget's worth of messages per turn (:data:`TURN_BUDGET_S` of
the receiver's time; always at least one). A message that finds nothing waiting and budget left is delivered at
once, as before; the others wait, in order, for the next turns. While more than :data:`MAX_QUEUED_BYTES` wait,
the socket a message came on stops being read; the paused sockets are read again once half of that is left. A
flood thus stays in the senders' socket buffers and then in the SDKs' own bounded queues (which drop past their
bound: 1,000 messages for the official Python SDK), and the engine's memory for it stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from picows import WSTransport

log = logging.getLogger("iii.engine.telemetry")

TURN_BUDGET_S: Final = 0.0001
"""The receiver's time per turn of the loop, at most (a message begun is finished): about ten log messages of the
official Python SDK. Under a flood of ten SDKs' logs at the engine, with calls going on, 0.1 ms kept the calls at
0.5x-0.9x their rate without the flood, 0.2 ms at 0.3x-0.45x, 0.5 ms at 0.2x-0.25x (bench/log_flood.py, single runs
on a shared machine); a loop with nothing else to do turns often enough to give telemetry nearly all of it anyway
(about 45,000 of those messages a second)."""
MAX_QUEUED_BYTES: Final = 1024 * 1024
"""Past this many bytes of waiting messages, the sockets they come on are paused."""


class TelemetryIntake:
    """Hands telemetry messages to ``deliver`` (the core's sink) within a budget per loop turn (see the module
    docstring). ``clock`` is for tests."""

    def __init__(
        self,
        deliver: Callable[[bytes], None],
        turn_budget_s: float = TURN_BUDGET_S,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._deliver = deliver
        self._budget = turn_budget_s
        self._max_queued = max_queued_bytes
        self._clock = clock
        self._queue: deque[bytes] = deque()
        self.queued_bytes = 0
        """Bytes of the messages waiting."""
        self._used = 0.0
        """The receiver's time in this turn so far."""
        self._turn_scheduled = False
        self._paused: list[WSTransport] = []
        self.pauses = 0
        """Times a socket was paused, since the start."""

    def offer(self, message: bytes, transport: WSTransport | None = None) -> None:
        """Deliver ``message`` now if nothing waits and the turn has budget left, else queue it; pause
        ``transport`` (the socket it came on) while too much waits."""
        if not self._queue and self._used < self._budget:
            self._run(message)
            return
        self._queue.append(message)
        self.queued_bytes += len(message)
        self._schedule_turn()
        if self.queued_bytes > self._max_queued and transport is not None and transport not in self._paused:
            transport.underlying_transport.pause_reading()
            self._paused.append(transport)
            self.pauses += 1

    def __len__(self) -> int:
        """Messages waiting."""
        return len(self._queue)

    def _run(self, message: bytes) -> None:
        started = self._clock()
        try:
            self._deliver(message)
        except Exception:  # the receiver's failure costs this message only, never the socket or the others
            log.exception("telemetry: the receiver failed on a message of %d bytes; dropped", len(message))
        self._used += self._clock() - started
        self._schedule_turn()

    def _schedule_turn(self) -> None:
        """Have the next turn of the loop reset the budget and go on with what waits."""
        if not self._turn_scheduled:
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_scheduled = False
        self._used = 0.0
        queue = self._queue
        while queue:  # at least one message per turn, whatever the budget
            message = queue.popleft()
            self.queued_bytes -= len(message)
            self._run(message)
            if self._used >= self._budget:
                break
        if self._paused and self.queued_bytes <= self._max_queued // 2:
            paused, self._paused = self._paused, []
            for transport in paused:
                if not transport.is_disconnected:
                    transport.underlying_transport.resume_reading()
