"""Deliveries to one subscribed binding, bounded: a few invocations in flight, a bounded queue, drops past it.

A :class:`Subscriber` never buffers without limit. It runs at most ``max_in_flight`` invocations of its function
at once (each one awaited, so the bound is real: a slow or hung function holds its slots until it answers or
times out) and keeps at most ``queue_size`` messages waiting behind them. A message that finds both full is
dropped for this subscriber alone: counted, and logged at most once per :data:`DROP_LOG_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from iii.modules.api import InvocationError

log = logging.getLogger("iii.modules.pubsub")

DROP_LOG_INTERVAL_S = 10.0
"""At most one warning per subscriber this often; it says how many messages were dropped since the last."""

Invoke = Callable[[str, Any], Awaitable[Any]]
"""``invoke(function_id, data)``: call a function and wait for its answer (raises InvocationError)."""


@dataclass(slots=True)
class Counts:
    """What happened to messages: for a topic, or for one subscriber."""

    published: int = 0
    delivered: int = 0
    """Invocations that answered without error."""
    failed: int = 0
    """Invocations that answered with an error (the function failed, was not found, timed out...)."""
    dropped: int = 0
    """Messages not delivered because the subscriber's queue was full."""


class Subscriber:
    """The deliveries of one ``subscribe`` binding (see the module docstring)."""

    def __init__(
        self,
        binding_id: str,
        topic: str,
        function_id: str,
        invoke: Invoke,
        *,
        queue_size: int,
        max_in_flight: int,
        topic_counts: Counts,
    ) -> None:
        self.binding_id = binding_id
        self.topic = topic
        self.function_id = function_id
        self.counts = Counts()
        self._invoke = invoke
        self._queue_size = queue_size
        self._max_in_flight = max_in_flight
        self._topic_counts = topic_counts
        self._queue: deque[Any] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._drops_unlogged = 0
        self._last_drop_log: float | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return len(self._workers)

    def offer(self, data: Any) -> bool:
        """Deliver ``data`` (from the event loop): start it, queue it, or drop it when both are full."""
        if self._closed:
            return False
        if len(self._workers) < self._max_in_flight:
            worker = asyncio.get_running_loop().create_task(self._work(data), name=f"pubsub:{self.binding_id}")
            self._workers.add(worker)
            self._idle.clear()
            return True
        if len(self._queue) < self._queue_size:
            self._queue.append(data)
            return True
        self.counts.dropped += 1
        self._topic_counts.dropped += 1
        self._log_drop()
        return False

    def close(self) -> None:
        """Stop delivering: waiting messages are discarded and invocations in flight are cancelled."""
        self._closed = True
        self._queue.clear()
        for worker in list(self._workers):
            worker.cancel()

    async def _work(self, data: Any) -> None:
        """Invoke for ``data``, then for whatever waits in the queue, until it is empty."""
        try:
            while True:
                await self._deliver(data)
                if self._closed or not self._queue:
                    return
                data = self._queue.popleft()
        finally:
            # Leave the set in the same step as the empty-queue check: a done callback would run later, and an
            # offer in between would queue a message that no worker takes.
            worker = asyncio.current_task()
            assert worker is not None
            self._workers.discard(worker)
            if not self._workers:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return when no delivery is in flight or waiting."""
        await self._idle.wait()

    async def _deliver(self, data: Any) -> None:
        try:
            await self._invoke(self.function_id, data)
        except InvocationError as error:
            self.counts.failed += 1
            self._topic_counts.failed += 1
            log.debug("pubsub: %s failed for topic %r: %s", self.function_id, self.topic, error)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.counts.failed += 1
            self._topic_counts.failed += 1
            log.exception("pubsub: delivering to %s for topic %r failed", self.function_id, self.topic)
        else:
            self.counts.delivered += 1
            self._topic_counts.delivered += 1

    def _log_drop(self) -> None:
        self._drops_unlogged += 1
        now = time.monotonic()
        if self._last_drop_log is not None and now - self._last_drop_log < DROP_LOG_INTERVAL_S:
            return
        log.warning(
            "pubsub: dropped %d message(s) for %s on topic %r: %d invocations in flight and %d waiting (the limits)",
            self._drops_unlogged,
            self.function_id,
            self.topic,
            self._max_in_flight,
            self._queue_size,
        )
        self._drops_unlogged = 0
        self._last_drop_log = now
