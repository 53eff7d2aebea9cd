"""The one interface a module is written against: what a worker can do.

A module serves functions, provides trigger types, invokes functions and hears that a worker left; nothing
else. The engine gives each module a :class:`ModuleHost` that does these things in-process (no hop, nothing
else to start); a module run as its own process gets a host that does them over the worker protocol with
the SDK. A module never imports the engine's server and never reaches into another module's tables.

Values crossing this interface are plain decoded JSON (``dict``, ``list``, ``str``, numbers, ``None``).

Contracts:

* A function handler is ``handler(data, call) -> result`` or ``async def``: ``data`` is the decoded payload,
  ``call`` says who called (:class:`CallInfo`). It raises :class:`FunctionError` (``iii.errors.FunctionError``,
  which the SDK's handlers may raise too) to answer an error with a code of its own; any other exception is
  answered as ``invocation_failed`` and logged. An ``async`` handler (or one returning an awaitable) is
  answered when the awaitable completes, so a handler may wait for I/O.
* A trigger provider is told of each binding of its type with :meth:`TriggerProvider.activate` (return None to
  accept, or the reason it is refused) and of its end with :meth:`TriggerProvider.deactivate`. Firing is the
  provider's business: it invokes the bound function through the host.
* :meth:`ModuleHost.invoke` raises :class:`InvocationError` with the callee's error code when the call fails.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from iii.errors import FunctionError

__all__ = [
    "BindingInfo",
    "CallInfo",
    "DescribingProvider",
    "FunctionError",
    "Handler",
    "InvocationError",
    "MetricSample",
    "Module",
    "ModuleHost",
    "TriggerProvider",
]


class InvocationError(Exception):
    """A call made through :meth:`ModuleHost.invoke` failed; ``code`` is the error code the caller got."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Who made a call: the calling worker's id (None for a call from inside the engine)."""

    worker_id: str | None = None


@dataclass(frozen=True, slots=True)
class BindingInfo:
    """A function bound to a trigger type, as its provider sees it (``config`` decoded, ``{}`` if none)."""

    binding_id: str
    trigger_type: str
    function_id: str
    config: Mapping[str, Any] = field(default_factory=dict)
    metadata: Any = None
    worker_id: str | None = None
    """The worker that made the binding (None for one made inside the engine)."""


Handler = Callable[[Any, CallInfo], Any | Awaitable[Any]]
"""A function a module serves (see the module docstring)."""


class TriggerProvider(Protocol):
    """A trigger type a module provides."""

    def activate(self, binding: BindingInfo) -> str | None:
        """Start serving ``binding``; returns None when accepted, or why it is refused."""

    def deactivate(self, binding: BindingInfo) -> None:
        """Stop serving ``binding`` (only called for an accepted one)."""


@runtime_checkable
class DescribingProvider(TriggerProvider, Protocol):
    """A provider that also says something about each binding it serves (a cron job's next run, say): the
    listings (``engine::registered-triggers::list``, ``iii triggers``, the console) show it with the binding."""

    def describe(self, binding_id: str) -> Mapping[str, Any]:
        """JSON-ready fields about the accepted binding ``binding_id`` (empty if there is nothing to say)."""


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One value a module reports on ``/metrics``: ``name`` (without the ``iii_`` prefix), labels, value."""

    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    help: str = ""
    kind: str = "gauge"
    """``gauge`` or ``counter``."""


class ModuleHost(Protocol):
    """What a module may do: the capabilities of any worker (see the module docstring)."""

    def register_function(
        self,
        function_id: str,
        handler: Handler,
        *,
        description: str = "",
        request_format: Any = None,
        response_format: Any = None,
    ) -> None:
        """Serve ``function_id`` with ``handler``."""

    def register_trigger_type(self, type_id: str, provider: TriggerProvider, *, description: str = "") -> None:
        """Provide trigger type ``type_id``: bindings to it go to ``provider``."""

    async def invoke(self, function_id: str, data: Any, *, timeout_s: float | None = None) -> Any:
        """Call ``function_id`` and return its result; raises :class:`InvocationError`."""

    def invoke_void(self, function_id: str, data: Any) -> None:
        """Call ``function_id`` without waiting for (or getting) its result."""

    def on_worker_left(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(worker_id)`` whenever a worker disconnects for good."""


class Module(Protocol):
    """A capability around the core. ``name`` names it in the config, logs, the console and metrics."""

    name: str

    async def start(self, host: ModuleHost) -> None:
        """Open backends, then register functions and trigger types on ``host``."""

    async def stop(self) -> None:
        """Stop serving and close backends (pending durable writes are finished first)."""

    def metrics(self) -> Iterable[MetricSample]:
        """What the module reports on ``/metrics`` (may be empty)."""

    def snapshot(self) -> Mapping[str, Any]:
        """A JSON-ready summary for the console (scopes and keys, topics and subscribers, jobs and next runs)."""
