"""The engine's own spans: what it does for a call (routing it, queueing it, an HTTP exchange, a channel's life),
recorded as the OpenTelemetry spans of the reference engine and kept by the module that receives telemetry.

A span is a child of the caller's W3C ``traceparent`` (a new trace when there is none, or when it is not one:
:func:`~iii.protocol.trace_context.parse_traceparent`),
and whoever the engine hands the work to gets a ``traceparent`` naming the engine's span
(:attr:`OpenSpan.traceparent`), so a trace shows the whole path: the caller's span, the engine's, the callee's.
Baggage is not the engine's business: it passes unchanged.

Only when a module receives telemetry (:meth:`~iii.modules.api.ModuleHost.receive_telemetry`) does the core
make an :class:`EngineSpans` at all; without one no span is started and the calls pay one ``is None`` test.
With one, a span costs its ids (``random.getrandbits``), two clock reads and its record; the records go to the
module in batches, once per turn of the event loop (:meth:`~iii.modules.api.TelemetrySink.keep`).

The engine joins traces; it starts one only where work enters the system from outside (an HTTP request). A call
or an enqueue gets its span only when it came with a sampled ``traceparent`` (:func:`in_trace`): the official
SDKs send one with every call, so their traces show the engine's hop, while a call sent without context (a lean
client, the console's polling, the engine's own machinery) costs nothing, and the callee's SDK starts the trace.
The observability functions are never traced: the pipeline must not observe itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, Final, Protocol

from iii._version import __version__
from iii.protocol.trace_context import new_span_id, new_trace_id, parse_traceparent

log = logging.getLogger("iii.engine")

SERVICE_NAME: Final = "iii"
"""The ``service.name`` of the engine's spans (the reference engine's default)."""
SCOPE_NAME: Final = "iii-engine"
"""Their instrumentation scope."""
UNTRACED_PREFIXES: Final = (
    "engine::traces::",
    "engine::logs::",
    "engine::log::",
    "engine::metrics::",
    "engine::baggage::",
    "engine::sampling::",
    "engine::health::",
    "engine::alerts::",
    "engine::rollups::",
)
"""The observability functions (the reference's list): their calls never get a span."""


class SpanSink(Protocol):
    """Where the records go (the module's :class:`~iii.modules.api.TelemetrySink`)."""

    def keep(self, signal: str, records: list[dict[str, Any]]) -> None: ...


def in_trace(traceparent: str | None) -> bool:
    """Whether ``traceparent`` names a parent in a sampled trace (the W3C flags' lowest bit): the engine's spans
    join such traces only."""
    parent = parse_traceparent(traceparent)
    return parent is not None and parent.sampled


def call_span_wanted(function_id: str, traceparent: str | None) -> bool:
    """Whether a call of ``function_id`` that came with ``traceparent`` gets a ``call <fn>`` span (see the module
    docstring)."""
    return traceparent is not None and not function_id.startswith(UNTRACED_PREFIXES) and in_trace(traceparent)


class OpenSpan:
    """A span started and not yet ended: its identity, and the attributes it will have."""

    __slots__ = ("attributes", "flags", "name", "parent_span_id", "span_id", "spans", "start_ns", "trace_id")

    def __init__(
        self,
        spans: EngineSpans,
        name: str,
        trace_id: str,
        span_id: str,
        parent_span_id: str | None,
        flags: str,
        attributes: list[list[str]],
    ) -> None:
        self.spans = spans
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_span_id = parent_span_id
        self.flags = flags
        self.attributes = attributes
        self.start_ns = time.time_ns()

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` naming this span: what the engine forwards to whom it hands the work."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def set(self, key: str, value: str) -> None:
        """Add an attribute (a string, as the stored spans hold them). The list is copied, not changed: spans may
        share one (:meth:`EngineSpans.start_with`)."""
        self.attributes = [*self.attributes, [key, value]]

    def end(self, error: tuple[str, str] | None = None) -> None:
        """End the span now (:meth:`EngineSpans.end`); once."""
        self.spans.end(self, error)


class EngineSpans:
    """Starts and ends the engine's spans and hands their records to the module that keeps them."""

    def __init__(self, sink: SpanSink) -> None:
        self._sink = sink
        self._batch: list[dict[str, Any]] = []
        self._flush_scheduled = False

    def start(self, name: str, traceparent: str | None, attributes: Iterable[tuple[str, str]] = ()) -> OpenSpan:
        """A span named ``name``, a child of ``traceparent`` (a new trace when it names none)."""
        return self.start_with(name, traceparent, [[key, value] for key, value in attributes])

    def start_with(self, name: str, traceparent: str | None, attributes: list[list[str]]) -> OpenSpan:
        """:meth:`start` with the attributes as the span keeps them (``[key, value]`` lists), never changed: the
        calls' path gives the spans of the calls between the same workers one list."""
        parent = parse_traceparent(traceparent)
        if parent is None:
            trace_id, parent_id, flags = new_trace_id(), None, "01"
        else:
            trace_id, parent_id, flags = parent
        return OpenSpan(self, name, trace_id, new_span_id(), parent_id, flags, attributes)

    def end(self, span: OpenSpan, error: tuple[str, str] | None = None) -> None:
        """End ``span`` now: status ``ok``, or ``error`` with ``(code, message)`` as the reference records a
        failure (``error.type``, ``error.message`` attributes and an ``exception`` event)."""
        end_ns = time.time_ns()
        record: dict[str, Any] = {
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "parent_span_id": span.parent_span_id,
            "name": span.name,
            "start_time_unix_nano": span.start_ns,
            "end_time_unix_nano": end_ns,
            "status": "ok",
            "attributes": span.attributes,
            "service_name": SERVICE_NAME,
            "events": [],
            "links": [],
            "instrumentation_scope_name": SCOPE_NAME,
            "instrumentation_scope_version": __version__,
        }
        if error is not None:
            code, message = error
            record["status"] = "error"
            record["status_description"] = message
            record["attributes"] = [*span.attributes, ["error.type", code], ["error.message", message]]
            record["events"].append(
                {
                    "name": "exception",
                    "timestamp_unix_nano": end_ns,
                    "attributes": [["exception.type", code], ["exception.message", message]],
                }
            )
        self._batch.append(record)
        if not self._flush_scheduled:
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a core driven directly): keep them now
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand the spans ended so far to the sink (a sink that fails loses them, logged)."""
        self._flush_scheduled = False
        batch, self._batch = self._batch, []
        if not batch:
            return
        try:
            self._sink.keep("spans", batch)
        except Exception:
            log.exception("the telemetry sink failed on %d engine spans; dropped", len(batch))
