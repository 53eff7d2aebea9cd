"""One queue's deliveries: claim what is due, invoke the function, settle the message with the outcome.

A :class:`Dispatcher` keeps up to ``concurrency`` deliveries of its queue in flight (FIFO: at most one per
message group, the backend's claim sees to it); a delivery's place is free once its function has answered,
while its settlement is being written. It claims when woken (a message was added, a delivery ended)
and otherwise every ``poll_interval`` (for retries whose backoff has run out). A delivery is settled by what
the call answered:

* a result: **ack** (the message is gone, never delivered again);
* ``invocation_stopped`` (the worker serving it disconnected, or the engine is stopping): **release**, ready
  again at once without counting an attempt;
* any other error (the function failed, ``TIMEOUT``, no such function): **retry** after
  ``backoff_ms * 2 ** (attempt - 1)``, or **bury** in the dead letters with the error once the message has
  failed ``max_retries`` times (the reference's count: ``max_retries`` deliveries in all).

A settlement that the backend fails to write leaves the message leased: the next start's ``recover`` (or
the lease running out) makes it ready again, so the message is delivered at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from iii.modules.api import InvocationError
from iii.modules.queue.settings import QueueConfig
from iii.modules.queue.store import QueueStore, StoredMessage, StoreError
from iii.protocol.errors import INVOCATION_STOPPED

log = logging.getLogger("iii.modules.queue")

Invoke = Callable[[StoredMessage], Awaitable[Any]]
"""Delivers one message: returns when the function answered a result, raises InvocationError otherwise."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class QueueStats:
    """What one queue did since the engine started (for metrics and the console)."""

    enqueued: int = 0
    delivered: int = 0
    """Deliveries acknowledged."""
    retried: int = 0
    """Failed deliveries that will be retried."""
    released: int = 0
    """Deliveries given back because their worker went away."""
    dead: int = 0
    """Messages sent to the dead letters."""
    in_flight: int = 0


class Dispatcher:
    """The deliveries of one queue (see the module docstring). :meth:`start`, then :meth:`wake` when it may have
    work; :meth:`stop` ends the claiming (and, with ``cancel``, the deliveries in flight)."""

    def __init__(
        self,
        queue: str,
        config: QueueConfig,
        store: QueueStore,
        invoke: Invoke,
        stats: QueueStats,
        *,
        poll_interval_s: float,
        lease_ms: int,
    ) -> None:
        self.queue = queue
        self.config = config
        self._store = store
        self._invoke = invoke
        self.stats = stats
        self._poll_interval_s = poll_interval_s
        self._lease_ms = lease_ms
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._in_flight = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"iii-queue-{self.queue}")

    def wake(self) -> None:
        self._wake.set()

    @property
    def delivering(self) -> bool:
        """Deliveries of this dispatcher are in flight."""
        return bool(self._deliveries)

    def halt(self) -> None:
        """Stop claiming; the deliveries in flight go on and settle (:meth:`stop` may follow)."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self, *, cancel: bool) -> None:
        """Stop claiming; with ``cancel`` also stop the deliveries in flight (their messages stay leased until
        the next start's recovery), else let them finish and settle."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if cancel:
            for delivery in list(self._deliveries):
                delivery.cancel()
            await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            free = self.config.concurrency - self._in_flight
            claimed: list[StoredMessage] = []
            if free > 0:
                try:
                    claimed = await self._store.claim(self.queue, free, now_ms(), self._lease_ms, fifo=self.config.fifo)
                except StoreError as error:
                    log.warning("queue=%s claim failed: %s", self.queue, error)
            for message in claimed:
                self._begin(message)
            if claimed and len(claimed) == free:
                continue  # a full batch: there may be more, claim again once a delivery ends (woken)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)

    def _begin(self, message: StoredMessage) -> None:
        self._in_flight += 1
        self.stats.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._deliver(message))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, message: StoredMessage) -> None:
        invoking = True
        acked = False
        try:
            try:
                await self._invoke(message)
            except InvocationError as error:
                settling = self._failed(message, error)
            else:
                settling = self._store.ack(message.message_id)
                acked = True
            # The function has answered: its slot takes the next message while the settlement is written, so
            # that the claim this wakes shares the settlement's commit (on SQLite, awaiting ``settling`` hands the
            # write over at once, before that claim). The message stays leased, and counted in flight
            # (``stats.in_flight``), until it is settled.
            invoking = False
            self._end_invocation()
            await settling
            if acked:
                self.stats.delivered += 1
        except StoreError as error:
            log.warning("queue=%s message=%s not settled: %s", self.queue, message.message_id, error)
        finally:
            if invoking:
                self._end_invocation()
            self.stats.in_flight -= 1
            if not acked or self.config.fifo:
                self._wake.set()  # a message ready again, or a FIFO group free to go on

    def _end_invocation(self) -> None:
        self._in_flight -= 1
        self._wake.set()

    async def _failed(self, message: StoredMessage, error: InvocationError) -> None:
        if error.code == INVOCATION_STOPPED:
            await self._store.release(message.message_id)
            self.stats.released += 1
            return
        attempt = message.attempts + 1
        failed_at = now_ms()
        record = {"code": error.code, "message": error.message, "attempt": attempt, "failed_at": failed_at}
        if attempt >= self.config.max_retries:
            await self._store.bury(message.message_id, record)
            self.stats.dead += 1
            log.warning(
                "queue=%s message=%s function=%s dead after %d attempt(s): %s",
                self.queue,
                message.message_id,
                message.function_id,
                attempt,
                error,
            )
            return
        await self._store.retry(message.message_id, failed_at + self.config.backoff_for(attempt), record)
        self.stats.retried += 1
