"""Telemetry messages as the SDKs send them on the engine's ``/otel`` socket: the framing, and OTLP/JSON encoding.

A message is one binary WebSocket frame: a 4-byte tag (``OTLP`` spans, ``LOGS`` logs, ``MTRC`` metrics) and an
OTLP/JSON export request (``ExportTraceServiceRequest``, ``ExportLogsServiceRequest``, ...), the framing of the
official SDKs. This module is shared: our SDK encodes its spans and log records here, and the engine's
observability module reads the tags from here (its decoder is :mod:`iii.modules.observability.otlp`).

Encoding follows protobuf's JSON mapping (lowerCamelCase field names, 64-bit integers as decimal strings, enums
as numbers, bytes values in base64) with one exception the iii engines and SDKs share: trace and span ids are
lower-case hex, not base64. Absent fields are left out. The structs below are msgspec's, so a whole batch is
encoded in one pass.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

SPANS: Final = b"OTLP"
LOGS: Final = b"LOGS"
METRICS: Final = b"MTRC"
SIGNALS: Final = {SPANS: "spans", LOGS: "logs", METRICS: "metrics"}
"""Each tag and the signal it carries."""

SPAN_KIND_INTERNAL: Final = 1
STATUS_UNSET: Final = 0
STATUS_OK: Final = 1
STATUS_ERROR: Final = 2

Attributes = list[dict[str, Any]]
"""OTLP ``KeyValue`` list, in JSON form: ``[{"key": ..., "value": {"stringValue": ...}}, ...]``."""


class _Out(msgspec.Struct, rename="camel", omit_defaults=True):
    pass


class Status(_Out):
    code: int = STATUS_UNSET
    message: str = ""


class Event(_Out):
    name: str
    time_unix_nano: str
    attributes: Attributes = []


class Span(_Out):
    """One span. Ids in hex (``parent_span_id`` empty for a root span); times in Unix ns as decimal strings."""

    trace_id: str
    span_id: str
    name: str
    start_time_unix_nano: str
    end_time_unix_nano: str
    kind: int
    """Always written (protobuf's default, 0, is "unspecified")."""
    parent_span_id: str = ""
    attributes: Attributes = []
    events: list[Event] = []
    status: Status | None = None


class LogRecord(_Out):
    """One log record; ``trace_id``/``span_id`` empty outside a span."""

    time_unix_nano: str
    observed_time_unix_nano: str
    severity_number: int
    severity_text: str
    body: dict[str, Any]
    attributes: Attributes = []
    trace_id: str = ""
    span_id: str = ""


class Scope(_Out):
    name: str
    version: str = ""


class _Resource(_Out):
    attributes: Attributes = []


class _ScopeSpans(_Out):
    scope: Scope
    spans: list[Span]


class _ResourceSpans(_Out):
    resource: _Resource
    scope_spans: list[_ScopeSpans]


class _TracesRequest(_Out):
    resource_spans: list[_ResourceSpans]


class _ScopeLogs(_Out):
    scope: Scope
    log_records: list[LogRecord]


class _ResourceLogs(_Out):
    resource: _Resource
    scope_logs: list[_ScopeLogs]


class _LogsRequest(_Out):
    resource_logs: list[_ResourceLogs]


_encoder: Final = msgspec.json.Encoder()


def any_value(value: Any) -> dict[str, Any]:
    """A Python value as an OTLP ``AnyValue`` (JSON form): str, bool, int, float, bytes, list/tuple, mapping,
    ``None`` (the empty value); anything else as its ``str()``."""
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if value is None:
        return {}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytesValue": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [any_value(item) for item in value]}}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": attributes(value)}}
    return {"stringValue": str(value)}


def attributes(pairs: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Attributes:
    """Attributes from a mapping or ``(key, value)`` pairs."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return [{"key": str(key), "value": any_value(value)} for key, value in items]


def spans_message(resource: Attributes, scope: Scope, spans: list[Span]) -> bytes:
    """The ``/otel`` message (tag ``OTLP``) carrying ``spans`` of one resource and scope."""
    request = _TracesRequest([_ResourceSpans(_Resource(resource), [_ScopeSpans(scope, spans)])])
    return _tagged(SPANS, request)


def logs_message(resource: Attributes, scope: Scope, records: list[LogRecord]) -> bytes:
    """The ``/otel`` message (tag ``LOGS``) carrying ``records`` of one resource and scope."""
    request = _LogsRequest([_ResourceLogs(_Resource(resource), [_ScopeLogs(scope, records)])])
    return _tagged(LOGS, request)


def _tagged(tag: bytes, request: msgspec.Struct) -> bytes:
    buffer = bytearray(tag)
    _encoder.encode_into(request, buffer, len(tag))
    return bytes(buffer)
