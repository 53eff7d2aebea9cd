"""What the engine's registries know of the things on the other side of a socket.

The registries, the router and the builtins see workers only through these protocols, so that they can
be tested without sockets and so that a caller inside the engine (a module, say) can wait for a
result the same way a worker does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import msgspec

if TYPE_CHECKING:
    from iii.engine.registry import FunctionEntry
    from iii.engine.worker_socket import WorkerConnection
    from iii.protocol.messages import InboundMessage


class Caller(Protocol):
    """Whoever waits for the result of an invocation."""

    write_paused: bool
    """Its outgoing buffer is full (only a worker's socket ever is): whoever sends it more is held back."""

    def deliver_result(self, invocation_id: str, function_id: str, result: msgspec.Raw, error: msgspec.Raw) -> None:
        """Receive the outcome of the call known to this caller as ``invocation_id``.

        Absent values are :data:`~iii.protocol.messages.JSON_NULL`. Must not raise.
        """


class ConnectionSession(Protocol):
    """The policy a worker connection lives under, when it has one (a worker of a module's worker port, see
    :mod:`iii.engine.sessions`); a connection without one may see and call everything, and serves its functions
    under the ids it registered.

    The connection hands the session its start, its messages and its end instead of giving them to the core:
    the session tells the core what of it the worker may do, when it may.
    """

    def on_connected(self, worker: WorkerConnection) -> None:
        """The worker's socket is open (the core has not heard of the worker)."""

    def on_message(self, message: InboundMessage, size: int) -> None:
        """A decoded message of ``size`` bytes from the worker (it owns its buffer: it may be kept)."""

    def on_disconnected(self, was_alive: bool) -> None:
        """The socket closed (``was_alive``: the connection was not retired by a reattach)."""

    def visible(self, function_id: str, entry: FunctionEntry | None) -> bool:
        """Whether the worker may see (and call) ``function_id`` (``entry``: the function, None if unknown)."""

    def local_id(self, function_id: str) -> str:
        """The id under which the worker serves the function the engine knows as ``function_id``."""


class Host(Protocol):
    """A worker that hosts functions and receives their invocations."""

    worker_id: str
    name: str
    write_paused: bool
    features: frozenset[str]
    """What the worker said it speaks (``observe.v1``, ...): the engine sends it nothing it did not declare."""
    session: ConnectionSession | None
    """The connection's policy (None: it may do everything)."""

    def send_message(self, payload: bytes) -> None:
        """Queue one encoded protocol message for the worker. Must not raise."""
