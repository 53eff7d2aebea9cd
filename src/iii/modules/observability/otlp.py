"""Decoding the SDKs' telemetry messages into the records the stores keep.

A message is a 4-byte tag (``OTLP`` spans, ``LOGS`` logs, ``MTRC`` metrics: :mod:`iii.protocol.otlp`, where
our SDK encodes its own) and an OTLP/JSON export request
(what the official SDKs send: the Python one writes it by hand, the Node one with OpenTelemetry's JSON
serializers). It is decoded in one pass by msgspec into the typed structs below: OTLP/JSON's field names
(lowerCamelCase), trace and span ids in hex, 64-bit integers as strings or numbers, enums as numbers. A field of
the wrong type refuses the whole message with msgspec's reason and where it was; fields this engine does not
know are ignored, as OTLP requires.

The records are plain JSON-ready dicts, in the reference engine's shapes (its ``StoredLog``, ``StoredSpan`` and
``StoredMetric``): ids in lower-case hex, times in Unix nanoseconds, ``service_name`` from the resource's
``service.name`` (``"unknown"`` without one). A log record sent without a severity text gets its level's name
(``INFO`` for 9 to 12, ...), so that the level filter finds every SDK's records.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any, Final

import msgspec

from iii.protocol.otlp import LOGS, METRICS, SPANS
from iii.protocol.otlp import SIGNALS as SIGNALS  # the module reads it here

_STATUS_NAMES: Final = {0: "unset", 1: "ok", 2: "error"}


class MalformedTelemetry(ValueError):
    """A message that is not a telemetry export request: an unknown tag, JSON that is not OTLP's."""


# --- OTLP/JSON, the fields this engine reads ----------------------------------------------------------
# Absent and null fields take protobuf's defaults (None stands for "not set" where the records need to know).


class _Struct(msgspec.Struct, rename="camel", omit_defaults=True):
    pass


class _ArrayValue(_Struct):
    values: list[AnyValue] = []


class _KeyValueList(_Struct):
    values: list[KeyValue] = []


class AnyValue(_Struct):
    """One of its fields is set (protobuf's oneof); none: an empty value."""

    string_value: str | None = None
    bool_value: bool | None = None
    int_value: int | None = None
    double_value: float | None = None
    array_value: _ArrayValue | None = None
    kvlist_value: _KeyValueList | None = None
    bytes_value: str | None = None
    """Base64 in protobuf's JSON; hex as the Python SDK writes it."""


class KeyValue(_Struct):
    key: str = ""
    value: AnyValue | None = None


class _Resource(_Struct):
    attributes: list[KeyValue] = []


class _Scope(_Struct):
    name: str | None = None
    version: str | None = None


class _LogRecord(_Struct):
    time_unix_nano: int | None = None
    observed_time_unix_nano: int | None = None
    severity_number: int | None = None
    severity_text: str | None = None
    body: AnyValue | None = None
    attributes: list[KeyValue] = []
    trace_id: str | None = None
    span_id: str | None = None


class _ScopeLogs(_Struct):
    scope: _Scope | None = None
    log_records: list[_LogRecord] = []


class _ResourceLogs(_Struct):
    resource: _Resource | None = None
    scope_logs: list[_ScopeLogs] = []


class _LogsRequest(_Struct):
    resource_logs: list[_ResourceLogs] = []


class _Status(_Struct):
    code: int | None = None
    message: str | None = None


class _Event(_Struct):
    name: str | None = None
    time_unix_nano: int | None = None
    attributes: list[KeyValue] = []


class _Link(_Struct):
    trace_id: str | None = None
    span_id: str | None = None
    trace_state: str | None = None
    attributes: list[KeyValue] = []


class _Span(_Struct):
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    name: str | None = None
    start_time_unix_nano: int | None = None
    end_time_unix_nano: int | None = None
    status: _Status | None = None
    attributes: list[KeyValue] = []
    events: list[_Event] = []
    links: list[_Link] = []
    flags: int | None = None


class _ScopeSpans(_Struct):
    scope: _Scope | None = None
    spans: list[_Span] = []


class _ResourceSpans(_Struct):
    resource: _Resource | None = None
    scope_spans: list[_ScopeSpans] = []


class _SpansRequest(_Struct):
    resource_spans: list[_ResourceSpans] = []


class _NumberPoint(_Struct):
    as_int: int | None = None
    as_double: float | None = None
    attributes: list[KeyValue] = []
    time_unix_nano: int | None = None


class _HistogramPoint(_Struct):
    count: int | None = None
    sum: float | None = None
    bucket_counts: list[int] = []
    explicit_bounds: list[float] = []
    min: float | None = None
    max: float | None = None
    attributes: list[KeyValue] = []
    time_unix_nano: int | None = None


class _Gauge(_Struct):
    data_points: list[_NumberPoint] = []


class _Sum(_Struct):
    data_points: list[_NumberPoint] = []
    is_monotonic: bool | None = None


class _Histogram(_Struct):
    data_points: list[_HistogramPoint] = []


class _Metric(_Struct):
    name: str | None = None
    description: str | None = None
    unit: str | None = None
    gauge: _Gauge | None = None
    sum: _Sum | None = None
    histogram: _Histogram | None = None


class _ScopeMetrics(_Struct):
    scope: _Scope | None = None
    metrics: list[_Metric] = []


class _ResourceMetrics(_Struct):
    resource: _Resource | None = None
    scope_metrics: list[_ScopeMetrics] = []


class _MetricsRequest(_Struct):
    resource_metrics: list[_ResourceMetrics] = []


_DECODERS: Final[dict[bytes, msgspec.json.Decoder[Any]]] = {
    SPANS: msgspec.json.Decoder(_SpansRequest, strict=False),
    LOGS: msgspec.json.Decoder(_LogsRequest, strict=False),
    METRICS: msgspec.json.Decoder(_MetricsRequest, strict=False),
}
"""``strict=False``: 64-bit integers come as strings (as protobuf's JSON writes them) or numbers."""


def decode(message: bytes) -> tuple[str, list[dict[str, Any]]]:
    """The signal of a tagged message and its records; :class:`MalformedTelemetry` if it holds no export
    request."""
    tag, body = bytes(message[:4]), message[4:]
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise MalformedTelemetry(f"unknown telemetry tag {tag!r}")
    try:
        request = decoder.decode(body)
        if isinstance(request, _SpansRequest):
            return "spans", span_records(request)
        if isinstance(request, _LogsRequest):
            return "logs", log_records(request)
        return "metrics", metric_records(request)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise MalformedTelemetry(f"not an OTLP export request: {exc}") from None
    except RecursionError:
        raise MalformedTelemetry("not an OTLP export request: values nested too deeply") from None


# --- values ------------------------------------------------------------------------------------------


def value_of(any_value: AnyValue | None) -> Any:
    """An OTLP value as JSON: a string, number, bool, list, object (a kvlist), hex (bytes) or None."""
    if any_value is None:
        return None
    if any_value.string_value is not None:
        return any_value.string_value
    if any_value.bool_value is not None:
        return any_value.bool_value
    if any_value.int_value is not None:
        return any_value.int_value
    if any_value.double_value is not None:
        return any_value.double_value
    if any_value.array_value is not None:
        return [value_of(item) for item in any_value.array_value.values]
    if any_value.kvlist_value is not None:
        return {kv.key: value_of(kv.value) for kv in any_value.kvlist_value.values}
    if any_value.bytes_value is not None:
        return _bytes_hex(any_value.bytes_value)
    return None


def text_of(any_value: AnyValue | None) -> str:
    """An OTLP value as text: a string as it is, anything else as JSON (what the reference shows)."""
    value = value_of(any_value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _bytes_hex(value: str) -> str:
    """A bytes value in hex: the Python SDK writes hex, protobuf's JSON base64."""
    try:
        return bytes.fromhex(value).hex()
    except ValueError:
        pass
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        raise MalformedTelemetry(f"bytesValue {value[:40]!r} is neither hex nor base64") from None


def _attributes(pairs: list[KeyValue]) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in pairs}


def _text_pairs(pairs: list[KeyValue]) -> list[list[str]]:
    """Attributes as ``[key, text]`` pairs, as the reference's spans have them."""
    return [[kv.key, text_of(kv.value)] for kv in pairs]


def _resource(resource: _Resource | None) -> tuple[dict[str, str], str]:
    attributes = {kv.key: text_of(kv.value) for kv in resource.attributes} if resource is not None else {}
    return attributes, attributes.get("service.name") or "unknown"


def _hex(value: str | None, field: str) -> str:
    """An id in lower-case hex (empty when absent); :class:`MalformedTelemetry` if not hex."""
    if not value:
        return ""
    try:
        return bytes.fromhex(value).hex()
    except ValueError:
        raise MalformedTelemetry(f"{field} {value[:40]!r} is not hex") from None


def _id(value: str | None, field: str) -> str | None:
    """An optional id in lower-case hex: None when absent, empty or all zeros (not set)."""
    hex_id = _hex(value, field)
    return hex_id if hex_id.strip("0") else None


def _scope_fields(entry: dict[str, Any], scope: _Scope | None) -> None:
    if scope is not None and scope.name:
        entry["instrumentation_scope_name"] = scope.name
    if scope is not None and scope.version:
        entry["instrumentation_scope_version"] = scope.version


# --- records -----------------------------------------------------------------------------------------


_SEVERITY_NAMES: Final = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def severity_name(number: int) -> str:
    """The level a severity number (1-24) falls in, for a record sent without its text (the Node SDK's
    ``Logger`` sends none); empty for 0 (unspecified)."""
    return _SEVERITY_NAMES[min(number - 1, 23) // 4] if number > 0 else ""


def log_records(request: _LogsRequest) -> list[dict[str, Any]]:
    """The log records of an export request, oldest first as sent."""
    records: list[dict[str, Any]] = []
    now = time.time_ns()
    for resource_logs in request.resource_logs:
        resource, service_name = _resource(resource_logs.resource)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                observed = record.observed_time_unix_nano or now
                severity = record.severity_number or 0
                entry: dict[str, Any] = {
                    "timestamp_unix_nano": record.time_unix_nano or observed,
                    "observed_timestamp_unix_nano": observed,
                    "severity_number": severity,
                    "severity_text": record.severity_text or severity_name(severity),
                    "body": text_of(record.body) if record.body is not None else "",
                    "attributes": _attributes(record.attributes),
                    "trace_id": _id(record.trace_id, "traceId"),
                    "span_id": _id(record.span_id, "spanId"),
                    "resource": resource,
                    "service_name": service_name,
                }
                _scope_fields(entry, scope_logs.scope)
                records.append(entry)
    return records


def span_records(request: _SpansRequest) -> list[dict[str, Any]]:
    """The spans of an export request."""
    records: list[dict[str, Any]] = []
    for resource_spans in request.resource_spans:
        _, service_name = _resource(resource_spans.resource)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                status = span.status or _Status()
                entry: dict[str, Any] = {
                    "trace_id": _hex(span.trace_id, "traceId"),
                    "span_id": _hex(span.span_id, "spanId"),
                    "parent_span_id": _id(span.parent_span_id, "parentSpanId"),
                    "name": span.name or "",
                    "start_time_unix_nano": span.start_time_unix_nano or 0,
                    "end_time_unix_nano": span.end_time_unix_nano or 0,
                    "status": _STATUS_NAMES.get(status.code or 0, "unset"),
                    "attributes": _text_pairs(span.attributes),
                    "service_name": service_name,
                    "events": [
                        {
                            "name": event.name or "",
                            "timestamp_unix_nano": event.time_unix_nano or 0,
                            "attributes": _text_pairs(event.attributes),
                        }
                        for event in span.events
                    ],
                    "links": [
                        {
                            "trace_id": _hex(link.trace_id, "traceId"),
                            "span_id": _hex(link.span_id, "spanId"),
                            "trace_state": link.trace_state or None,
                            "attributes": _text_pairs(link.attributes),
                        }
                        for link in span.links
                    ],
                }
                if status.message:
                    entry["status_description"] = status.message
                _scope_fields(entry, scope_spans.scope)
                if span.flags:
                    entry["flags"] = span.flags
                records.append(entry)
    return records


def metric_records(request: _MetricsRequest) -> list[dict[str, Any]]:
    """The metrics of an export request, each with its data points."""
    records: list[dict[str, Any]] = []
    now = time.time_ns()
    for resource_metrics in request.resource_metrics:
        _, service_name = _resource(resource_metrics.resource)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                metric_type, points = _points(metric)
                entry: dict[str, Any] = {
                    "name": metric.name or "",
                    "description": metric.description or "",
                    "unit": metric.unit or "",
                    "metric_type": metric_type,
                    "data_points": points,
                    "service_name": service_name,
                    "timestamp_unix_nano": max((p["timestamp_unix_nano"] for p in points), default=0) or now,
                }
                _scope_fields(entry, scope_metrics.scope)
                records.append(entry)
    return records


def _points(metric: _Metric) -> tuple[str, list[dict[str, Any]]]:
    """The reference's metric type and data points of a metric (an exponential histogram or a summary, which
    the SDKs do not send, has none)."""
    # One kind of data is set (protobuf's oneof); a message with more is taken by the first of gauge, sum and
    # histogram, its type and points both from that one.
    numbers: _Gauge | _Sum | None = metric.gauge
    metric_type = "gauge"
    if numbers is None and metric.sum is not None:
        numbers, metric_type = metric.sum, "counter" if metric.sum.is_monotonic else "updowncounter"
    if numbers is not None:
        return metric_type, [
            {
                "value": float(point.as_int if point.as_int is not None else point.as_double or 0.0),
                "attributes": _text_pairs(point.attributes),
                "timestamp_unix_nano": point.time_unix_nano or 0,
            }
            for point in numbers.data_points
        ]
    if metric.histogram is not None:
        return "histogram", [
            {
                "count": point.count or 0,
                "sum": point.sum or 0.0,
                "bucket_counts": point.bucket_counts,
                "explicit_bounds": point.explicit_bounds,
                "min": point.min,
                "max": point.max,
                "attributes": _text_pairs(point.attributes),
                "timestamp_unix_nano": point.time_unix_nano or 0,
            }
            for point in metric.histogram.data_points
        ]
    return "gauge", []
