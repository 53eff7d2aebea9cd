"""The span of a handler run (``execute <function id>``): when one is started, what it records, and its OTLP/JSON
encoding. Its parent is the call's W3C ``traceparent`` (:mod:`iii.protocol.trace_context`); the call's W3C
``baggage`` entries become its attributes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from iii.protocol import otlp
from iii.protocol.trace_context import new_span_id, new_trace_id, parse_traceparent


class ExecutionSpan:
    """The span of one handler run, from its start until the answer is sent."""

    __slots__ = ("baggage", "name", "parent_span_id", "span_id", "start_ns", "trace_id")

    def __init__(self, name: str, trace_id: str, parent_span_id: str | None, baggage: str | None) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = new_span_id()
        self.parent_span_id = parent_span_id
        self.baggage = baggage
        self.start_ns = time.time_ns()


def start_span(function_id: str, traceparent: str | None, baggage: str | None) -> ExecutionSpan | None:
    """The span of a run of ``function_id`` about to start: a child of ``traceparent``, or the root of a new trace
    when that names no parent; None when the caller's trace is not sampled (its ``traceparent`` is then passed on
    unchanged)."""
    parent = parse_traceparent(traceparent)
    if parent is None:
        return ExecutionSpan(f"execute {function_id}", new_trace_id(), None, baggage)
    if not parent.sampled:
        return None
    return ExecutionSpan(f"execute {function_id}", parent.trace_id, parent.parent_span_id, baggage)


def baggage_entries(baggage: str) -> list[tuple[str, str]]:
    """The ``key=value`` entries of a W3C ``baggage`` header (properties after ``;`` left out; malformed
    entries skipped)."""
    entries = []
    for member in baggage.split(","):
        key, separator, value = member.split(";", 1)[0].partition("=")
        key = key.strip()
        if separator and key:
            entries.append((unquote(key), unquote(value.strip())))
    return entries


def encoded_span(span: ExecutionSpan, end_ns: int, error: Any) -> str:
    """The span, ended at ``end_ns``, as OTLP/JSON: status ok (``error`` None), or error with the error's message
    and an ``exception`` event (``error``: the error answered, a mapping with ``code``, ``message`` and perhaps
    ``stacktrace``, or anything else, taken as its message)."""
    events = None
    if error is None:
        status, message = otlp.STATUS_OK, ""
    else:
        message = str(error.get("message", "")) if isinstance(error, Mapping) else str(error)
        status = otlp.STATUS_ERROR
        details: dict[str, Any] = {"exception.message": message}
        if isinstance(error, Mapping):
            details["exception.type"] = str(error.get("code", ""))
            if error.get("stacktrace"):
                details["exception.stacktrace"] = str(error["stacktrace"])
        events = [otlp.Event("exception", str(end_ns), otlp.attributes(details))]
    return otlp.span_json(
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.name,
        span.start_ns,
        end_ns,
        status_code=status,
        status_message=message,
        attributes=otlp.attributes(baggage_entries(span.baggage)) if span.baggage else None,
        events=events,
    )
