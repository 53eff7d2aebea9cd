"""The invocation a handler runs in, readable from anywhere inside it: :func:`current_invocation`.

The engine adds the caller's worker id to every object payload (``_caller_worker_id``, as the reference engine
does, for the official SDKs). Our SDK takes it out before the handler sees the payload, so ``area(**data)``
works, and offers it here instead, with the rest of what is known about the call. The context lives in a
:class:`contextvars.ContextVar`: it follows the async handler's task and the sync handler's thread, and
whatever they start with the context copied.
"""

from __future__ import annotations

import contextvars
import functools
from dataclasses import dataclass
from typing import Any, Final

import msgspec

CALLER_KEY: Final = "_caller_worker_id"


@dataclass(frozen=True)
class InvocationContext:
    """The invocation the current code runs in, as the official SDK's ``current_invocation()`` returns it.

    ``caller`` is ``{"worker_id": ...}`` for a call made by a worker, ``None`` when the engine made it (an HTTP
    request, a trigger) or the id was not sent. ``metadata``, ``traceparent`` and ``baggage`` are the call's.
    ``observe_depth`` counts the observer activations (observe.v1) that led to this call; the calls the handler
    makes carry it on, so that the engine can stop a loop of observers calling what they observe.
    ``trace_id`` and ``span_id`` name the span this SDK records around the handler (None with telemetry off);
    the calls the handler makes name that span as their parent.
    """

    function_id: str
    invocation_id: str
    caller: dict[str, Any] | None = None
    metadata: Any = None
    traceparent: str | None = None
    baggage: str | None = None
    observe_depth: int = 0
    trace_id: str | None = None
    span_id: str | None = None

    @functools.cached_property
    def as_caller(self) -> msgspec.Raw:
        """``invokefunction.caller`` for the calls made from this invocation (encoded once, when first needed)."""
        return msgspec.Raw(msgspec.json.encode({"function_id": self.function_id, "invocation_id": self.invocation_id}))

    @functools.cached_property
    def outgoing_traceparent(self) -> str | None:
        """``traceparent`` for the calls made from this invocation: its span as their parent, or (telemetry off,
        or a trace not sampled) the call's own, so that the trace goes on."""
        if self.trace_id is not None and self.span_id is not None:
            return f"00-{self.trace_id}-{self.span_id}-01"
        return self.traceparent


_CURRENT: contextvars.ContextVar[InvocationContext | None] = contextvars.ContextVar(
    "iii_current_invocation", default=None
)


def current_invocation() -> InvocationContext | None:
    """The invocation the calling code runs in, or ``None`` outside every handler."""
    return _CURRENT.get()


_TELEMETRY: contextvars.ContextVar[Any] = contextvars.ContextVar("iii_current_telemetry", default=None)


def current_telemetry() -> Any:
    """The telemetry exporter of the worker whose handler the calling code runs in (None outside handlers, or
    when that worker sends none): where the handler's log records go."""
    return _TELEMETRY.get()


def handler_context(invocation: InvocationContext, telemetry: Any = None) -> contextvars.Context:
    """A copy of the current context in which :func:`current_invocation` returns ``invocation`` (and
    :func:`current_telemetry` ``telemetry``)."""
    context = contextvars.copy_context()
    context.run(_enter, invocation, telemetry)
    return context


def _enter(invocation: InvocationContext, telemetry: Any) -> None:
    _CURRENT.set(invocation)
    if telemetry is not None:
        _TELEMETRY.set(telemetry)


def take_caller(data: Any) -> str | None:
    """Remove the engine's ``_caller_worker_id`` from a payload object; returns it (``None`` if absent)."""
    if isinstance(data, dict):
        caller = data.pop(CALLER_KEY, None)
        return caller if isinstance(caller, str) else None
    return None
