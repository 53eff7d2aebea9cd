"""What the engine's registries know of the things on the other side of a socket.

The registries, the router and the builtins see workers only through these protocols, so that they can
be tested without sockets and so that a caller inside the engine (a module, say) can wait for a
result the same way a worker does.
"""

from __future__ import annotations

from typing import Protocol

import msgspec


class Caller(Protocol):
    """Whoever waits for the result of an invocation."""

    write_paused: bool
    """Its outgoing buffer is full (only a worker's socket ever is): whoever sends it more is held back."""

    def deliver_result(self, invocation_id: str, function_id: str, result: msgspec.Raw, error: msgspec.Raw) -> None:
        """Receive the outcome of the call known to this caller as ``invocation_id``.

        Absent values are :data:`~iii.protocol.messages.JSON_NULL`. Must not raise.
        """


class Host(Protocol):
    """A worker that hosts functions and receives their invocations."""

    worker_id: str
    name: str
    write_paused: bool
    features: frozenset[str]
    """What the worker said it speaks (``observe.v1``, ...): the engine sends it nothing it did not declare."""

    def send_message(self, payload: bytes) -> None:
        """Queue one encoded protocol message for the worker. Must not raise."""
