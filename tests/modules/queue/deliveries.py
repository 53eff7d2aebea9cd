"""Helpers of the queue tests: a thread-safe record of the payloads a worker's function is called with, and a
wait for a registration to reach the engine."""

from __future__ import annotations

import threading
import time
from typing import Any

from iii import III


class Deliveries:
    """Payloads in the order of arrival, with the monotonic time each arrived; ``wait(n)`` for ``n`` of them."""

    def __init__(self) -> None:
        self.received: list[tuple[float, Any]] = []
        self._changed = threading.Condition()

    def record(self, data: Any) -> None:
        with self._changed:
            self.received.append((time.monotonic(), data))
            self._changed.notify_all()

    def wait(self, count: int, timeout_s: float = 10.0) -> list[Any]:
        """The payloads, once there are ``count``; ``AssertionError`` after ``timeout_s``."""
        with self._changed:
            arrived = self._changed.wait_for(lambda: len(self.received) >= count, timeout_s)
            assert arrived, f"{len(self.received)} deliveries after {timeout_s} s, not {count}: {self.payloads}"
            return self.payloads

    @property
    def payloads(self) -> list[Any]:
        return [data for _, data in self.received]

    def times_of(self, predicate: Any) -> list[float]:
        return [at for at, data in self.received if predicate(data)]


def registered(client: III, function_id: str, timeout_s: float = 10.0) -> None:
    """Wait until the engine lists ``function_id`` (registrations are fire-and-forget)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = client.trigger({"function_id": "engine::functions::list", "payload": {}})["functions"]
        if any(row["function_id"] == function_id for row in rows):
            return
        time.sleep(0.01)  # polling the engine's listing: there is no event to wait on across processes
    raise AssertionError(f"{function_id} was never registered")
