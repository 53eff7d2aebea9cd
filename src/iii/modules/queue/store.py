"""The one interface of the queue backends (SQLite in ``--data-dir``, Redis Streams with ``--redis-url``).

A backend keeps, per queue, messages in three places: **ready** (to be delivered once ``available_at_ms`` has
come), **leased** (handed to a delivery by :meth:`QueueStore.claim`, until acknowledged, retried, released or
buried, or until the lease runs out) and **dead** (the queue's dead-letter list, with the last error). It knows
nothing of functions, retries or backoff: the dispatcher decides those and tells the backend.

Every method that changes messages has made the change durable when it returns (each backend says what that
means); :meth:`QueueStore.add` returning is what lets the engine answer an enqueue with its receipt.

Queue names are the configured named queues and, for durable topics, one queue per subscribed function
(:func:`topic_queue`), so that every subscribed function gets every message and replicas of one function compete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


def topic_queue(topic: str, function_id: str) -> str:
    """The queue that holds a durable topic's messages for one subscribed function."""
    return f"topic:{topic}:{function_id}"


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to add: ``message_id`` is the receipt the enqueuer got (unique)."""

    message_id: str
    queue: str
    function_id: str
    data: bytes
    """The payload's JSON, delivered as it was enqueued."""
    group: str | None = None
    """FIFO queues: the message group (the value of the queue's ``message_group_field``)."""
    available_at_ms: int = 0
    traceparent: str | None = None
    baggage: str | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as the backend holds it."""

    message_id: str
    queue: str
    function_id: str
    data: bytes
    group: str | None
    attempts: int
    """Deliveries that failed so far (a released delivery does not count)."""
    enqueued_at_ms: int
    """When :meth:`QueueStore.add` stored it (wall clock)."""
    available_at_ms: int
    traceparent: str | None = None
    baggage: str | None = None
    last_error: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class QueueCounts:
    ready: int
    """Waiting, due now or later (a retry's backoff)."""
    leased: int
    """Being delivered."""
    dead: int


class StoreError(Exception):
    """The backend failed (I/O error, Redis unreachable, closed); the change may not have happened."""


class QueueStore(Protocol):
    """A queue backend. All methods run on the module's event loop."""

    kind: str
    """``sqlite`` or ``redis``."""

    async def add(self, messages: list[NewMessage]) -> None:
        """Add ready messages, durably, in order (a message id already present is left as it is)."""

    async def claim(
        self, queue: str, limit: int, now_ms: int, lease_ms: int, *, fifo: bool = False
    ) -> list[StoredMessage]:
        """Lease up to ``limit`` ready messages of ``queue`` due at ``now_ms``, oldest first, for ``lease_ms``.

        ``fifo``: at most one message per group, and none of a group that has a leased message (a group's
        messages are delivered one at a time, in order; a failing one holds back only its own group, until its
        retry is due).
        """

    async def ack(self, message_id: str) -> None:
        """A leased message was delivered: it is gone, and never delivered again. Also when its lease ran out
        meanwhile (ready again, or leased again: the late result still counts); an unknown id is no error."""

    async def retry(self, message_id: str, available_at_ms: int, error: dict[str, Any]) -> None:
        """A leased message's delivery failed: ready again at ``available_at_ms``, one attempt more.

        Retry, release and bury change only a leased message: on any other id they do nothing."""

    async def release(self, message_id: str) -> None:
        """Give a leased message back, ready at once, without counting an attempt (its worker vanished)."""

    async def bury(self, message_id: str, error: dict[str, Any]) -> None:
        """A leased message failed for the last time: it goes to its queue's dead letters with ``error``, one
        attempt more."""

    async def recover(self) -> int:
        """At start: the messages this engine's earlier life had leased (it was killed mid-delivery) are ready
        again, at once; returns how many. (SQLite: every lease; Redis: this engine's own.)"""

    async def reclaim(self, now_ms: int) -> int:
        """Make messages whose lease ran out ready again (another engine's deliveries, it died); returns how
        many."""

    async def redrive(self, queue: str) -> int:
        """Every dead message of ``queue`` back to ready (attempts reset); returns how many."""

    async def redrive_message(self, queue: str, message_id: str) -> bool:
        """One dead message back to ready; False if it is not a dead message of ``queue``."""

    async def discard(self, queue: str, message_id: str) -> bool:
        """Delete one dead message; False if it is not a dead message of ``queue``."""

    async def dead(self, queue: str, limit: int) -> list[StoredMessage]:
        """The oldest ``limit`` dead messages of ``queue``."""

    async def queues(self) -> dict[str, QueueCounts]:
        """Every queue that holds messages, with its counts."""

    async def close(self) -> None:
        """Finish what was started and release the backend."""
