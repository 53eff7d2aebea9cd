"""Telemetry messages as the SDKs send them on the engine's ``/otel`` socket: the framing, and OTLP/JSON encoding.

A message is one binary WebSocket frame: a 4-byte tag (``OTLP`` spans, ``LOGS`` logs, ``MTRC`` metrics) and an
OTLP/JSON export request (``ExportTraceServiceRequest``, ``ExportLogsServiceRequest``, ...), the framing of the
official SDKs. This module is shared: our SDK encodes its spans and log records here, and the engine's
observability module reads the tags from here (its decoder is :mod:`iii.modules.observability.otlp`).

Encoding follows protobuf's JSON mapping (lowerCamelCase field names, 64-bit integers as decimal strings, enums
as numbers, bytes values in base64) with one exception the iii engines and SDKs share: trace and span ids are
lower-case hex, not base64. Absent fields are left out. Log records are msgspec structs (a batch is encoded in
one pass); a span is written with one format string (:func:`span_json`), which costs a third of building a struct
for it, on a path our SDK takes once per function execution.
"""

from __future__ import annotations

import base64
import functools
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


class Event(_Out):
    """A span's event, for :func:`span_json`."""

    name: str
    time_unix_nano: str
    attributes: Attributes = []


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


@functools.lru_cache(maxsize=4096)
def _quoted(text: str) -> str:
    """``text`` as a JSON string (span names repeat: one per function)."""
    return _encoder.encode(text).decode()


def span_json(
    trace_id: str,
    span_id: str,
    parent_span_id: str | None,
    name: str,
    start_time_unix_nano: int,
    end_time_unix_nano: int,
    *,
    kind: int = SPAN_KIND_INTERNAL,
    status_code: int = STATUS_UNSET,
    status_message: str = "",
    attributes: Attributes | None = None,
    events: list[Event] | None = None,
) -> str:
    """One OTLP/JSON ``Span``, for :func:`spans_message`. The ids must be hex (they are written as they are);
    ``parent_span_id`` None or empty for a root span. Written with one format string, not a struct per span: this
    runs once per function execution in our SDK."""
    parent = f',"parentSpanId":"{parent_span_id}"' if parent_span_id else ""
    text = (
        f'{{"traceId":"{trace_id}","spanId":"{span_id}"{parent},"name":{_quoted(name)},"kind":{kind},'
        f'"startTimeUnixNano":"{start_time_unix_nano}","endTimeUnixNano":"{end_time_unix_nano}"'
    )
    if attributes:
        text += f',"attributes":{_encoder.encode(attributes).decode()}'
    if events:
        text += f',"events":{_encoder.encode(events).decode()}'
    if status_code or status_message:
        message = f',"message":{_quoted(status_message)}' if status_message else ""
        text += f',"status":{{"code":{status_code}{message}}}'
    return text + "}"


def spans_message(resource: Attributes, scope: Scope, spans: list[str]) -> bytes:
    """The ``/otel`` message (tag ``OTLP``) carrying ``spans`` (each from :func:`span_json`) of one resource and
    scope."""
    head = f'{{"resourceSpans":[{{"resource":{{"attributes":{_encoder.encode(resource).decode()}}},"scopeSpans":[{{'
    body = f'"scope":{_encoder.encode(scope).decode()},"spans":[{",".join(spans)}]}}]}}]}}'
    return SPANS + (head + body).encode()


def logs_message(resource: Attributes, scope: Scope, records: list[LogRecord]) -> bytes:
    """The ``/otel`` message (tag ``LOGS``) carrying ``records`` of one resource and scope."""
    request = _LogsRequest([_ResourceLogs(_Resource(resource), [_ScopeLogs(scope, records)])])
    return _tagged(LOGS, request)


def _tagged(tag: bytes, request: msgspec.Struct) -> bytes:
    buffer = bytearray(tag)
    _encoder.encode_into(request, buffer, len(tag))
    return bytes(buffer)
