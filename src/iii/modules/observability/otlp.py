"""Decoding the SDKs' telemetry messages into the records the stores keep.

A message is a 4-byte tag (``OTLP`` spans, ``LOGS`` logs, ``MTRC`` metrics) and an OTLP/JSON export request
(what the official SDKs send: the Python one writes it by hand, the Node one with OpenTelemetry's JSON
serializers). It is decoded with the OpenTelemetry protobuf definitions (``opentelemetry-proto``) and protobuf's
JSON parser; OTLP/JSON differs from protobuf's JSON mapping only in that trace and span ids are hex, not base64,
so those are turned into base64 first. Fields this engine does not know are ignored, as OTLP requires.

The records are plain JSON-ready dicts, in the reference engine's shapes (its ``StoredLog``, ``StoredSpan`` and
``StoredMetric``): ids in lower-case hex, times in Unix nanoseconds, ``service_name`` from the resource's
``service.name`` (``"unknown"`` without one). A log record sent without a severity text gets its level's name
(``INFO`` for 9 to 12, ...), so that the level filter finds every SDK's records.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterable
from typing import Any, Final, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Status

SPANS: Final = b"OTLP"
LOGS: Final = b"LOGS"
METRICS: Final = b"MTRC"
SIGNALS: Final = {SPANS: "spans", LOGS: "logs", METRICS: "metrics"}
"""Each tag and the signal it carries."""

_HEX_FIELDS: Final = frozenset(("traceId", "spanId", "parentSpanId"))
_STATUS_NAMES: Final = {
    Status.STATUS_CODE_UNSET: "unset",
    Status.STATUS_CODE_OK: "ok",
    Status.STATUS_CODE_ERROR: "error",
}


class MalformedTelemetry(ValueError):
    """A message that is not a telemetry export request: an unknown tag, JSON that is not OTLP's."""


def decode(message: bytes) -> tuple[str, list[dict[str, Any]]]:
    """The signal of a tagged message and its records; :class:`MalformedTelemetry` if it holds no export
    request."""
    tag, body = message[:4], message[4:]
    if tag == SPANS:
        return "spans", span_records(_parse(body, ExportTraceServiceRequest()))
    if tag == LOGS:
        return "logs", log_records(_parse(body, ExportLogsServiceRequest()))
    if tag == METRICS:
        return "metrics", metric_records(_parse(body, ExportMetricsServiceRequest()))
    raise MalformedTelemetry(f"unknown telemetry tag {tag!r}")


_Request = TypeVar("_Request", bound=Message)


def _parse(body: bytes, request: _Request) -> _Request:
    """``request`` filled from the OTLP/JSON ``body``."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedTelemetry(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise MalformedTelemetry("not an OTLP export request (a JSON object)")
    try:
        _ids_to_base64(document)
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise MalformedTelemetry(f"not an OTLP export request: {exc}") from None
    return request


def _ids_to_base64(node: Any) -> None:
    """Turn OTLP/JSON's hex ids (and the Python SDK's hex ``bytesValue``) into protobuf JSON's base64, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _HEX_FIELDS and isinstance(value, str):
                node[key] = _hex_to_base64(value, key)
            elif key == "bytesValue" and isinstance(value, str):
                with contextlib.suppress(ValueError):  # if not hex, base64 already, as protobuf's JSON has it
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
            else:
                _ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _ids_to_base64(item)


def _hex_to_base64(value: str, key: str) -> str:
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        raise MalformedTelemetry(f"{key} {value[:40]!r} is not hex") from None


# --- values ------------------------------------------------------------------------------------------


def value_of(any_value: AnyValue) -> Any:
    """An OTLP value as JSON: a string, number, bool, list, object (a kvlist), hex (bytes) or None."""
    kind = any_value.WhichOneof("value")
    if kind == "string_value":
        return any_value.string_value
    if kind == "bool_value":
        return any_value.bool_value
    if kind == "int_value":
        return any_value.int_value
    if kind == "double_value":
        return any_value.double_value
    if kind == "array_value":
        return [value_of(item) for item in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in any_value.kvlist_value.values}
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return None


def text_of(any_value: AnyValue) -> str:
    """An OTLP value as text: a string as it is, anything else as JSON (what the reference shows)."""
    value = value_of(any_value)
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in pairs}


def _text_pairs(pairs: Iterable[KeyValue]) -> list[list[str]]:
    """Attributes as ``[key, text]`` pairs, as the reference's spans have them."""
    return [[kv.key, text_of(kv.value)] for kv in pairs]


def _resource(resource: Resource) -> tuple[dict[str, str], str]:
    attributes = {kv.key: text_of(kv.value) for kv in resource.attributes}
    return attributes, attributes.get("service.name") or "unknown"


def _hex_or_none(raw: bytes) -> str | None:
    return raw.hex() if raw and any(raw) else None


# --- records -----------------------------------------------------------------------------------------


_SEVERITY_NAMES: Final = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def severity_name(number: int) -> str:
    """The level a severity number (1-24) falls in, for a record sent without its text (the Node SDK's
    ``Logger`` sends none); empty for 0 (unspecified)."""
    return _SEVERITY_NAMES[min(number - 1, 23) // 4] if number > 0 else ""


def log_records(request: ExportLogsServiceRequest) -> list[dict[str, Any]]:
    """The log records of an export request, oldest first as sent."""
    records: list[dict[str, Any]] = []
    now = time.time_ns()
    for resource_logs in request.resource_logs:
        resource, service_name = _resource(resource_logs.resource)
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope
            for record in scope_logs.log_records:
                observed = record.observed_time_unix_nano or now
                entry: dict[str, Any] = {
                    "timestamp_unix_nano": record.time_unix_nano or observed,
                    "observed_timestamp_unix_nano": observed,
                    "severity_number": int(record.severity_number),
                    "severity_text": record.severity_text or severity_name(record.severity_number),
                    "body": text_of(record.body) if record.HasField("body") else "",
                    "attributes": _attributes(record.attributes),
                    "trace_id": _hex_or_none(record.trace_id),
                    "span_id": _hex_or_none(record.span_id),
                    "resource": resource,
                    "service_name": service_name,
                }
                if scope.name:
                    entry["instrumentation_scope_name"] = scope.name
                if scope.version:
                    entry["instrumentation_scope_version"] = scope.version
                records.append(entry)
    return records


def span_records(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """The spans of an export request."""
    records: list[dict[str, Any]] = []
    for resource_spans in request.resource_spans:
        _, service_name = _resource(resource_spans.resource)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                entry: dict[str, Any] = {
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": _hex_or_none(span.parent_span_id),
                    "name": span.name,
                    "start_time_unix_nano": span.start_time_unix_nano,
                    "end_time_unix_nano": span.end_time_unix_nano,
                    "status": _STATUS_NAMES.get(span.status.code, "unset"),
                    "attributes": _text_pairs(span.attributes),
                    "service_name": service_name,
                    "events": [
                        {
                            "name": event.name,
                            "timestamp_unix_nano": event.time_unix_nano,
                            "attributes": _text_pairs(event.attributes),
                        }
                        for event in span.events
                    ],
                    "links": [
                        {
                            "trace_id": link.trace_id.hex(),
                            "span_id": link.span_id.hex(),
                            "trace_state": link.trace_state or None,
                            "attributes": _text_pairs(link.attributes),
                        }
                        for link in span.links
                    ],
                }
                if span.status.message:
                    entry["status_description"] = span.status.message
                if scope.name:
                    entry["instrumentation_scope_name"] = scope.name
                if scope.version:
                    entry["instrumentation_scope_version"] = scope.version
                if span.flags:
                    entry["flags"] = span.flags
                records.append(entry)
    return records


def metric_records(request: ExportMetricsServiceRequest) -> list[dict[str, Any]]:
    """The metrics of an export request, each with its data points."""
    records: list[dict[str, Any]] = []
    now = time.time_ns()
    for resource_metrics in request.resource_metrics:
        _, service_name = _resource(resource_metrics.resource)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            for metric in scope_metrics.metrics:
                metric_type, points = _points(metric)
                entry: dict[str, Any] = {
                    "name": metric.name,
                    "description": metric.description,
                    "unit": metric.unit,
                    "metric_type": metric_type,
                    "data_points": points,
                    "service_name": service_name,
                    "timestamp_unix_nano": max((p["timestamp_unix_nano"] for p in points), default=0) or now,
                }
                if scope.name:
                    entry["instrumentation_scope_name"] = scope.name
                if scope.version:
                    entry["instrumentation_scope_version"] = scope.version
                records.append(entry)
    return records


def _points(metric: Metric) -> tuple[str, list[dict[str, Any]]]:
    """The reference's metric type and data points of a metric (an exponential histogram or a summary, which
    the SDKs do not send, has none)."""
    kind = metric.WhichOneof("data")
    if kind == "gauge" or kind == "sum":
        data = metric.gauge if kind == "gauge" else metric.sum
        metric_type = "gauge" if kind == "gauge" else ("counter" if metric.sum.is_monotonic else "updowncounter")
        return metric_type, [
            {
                "value": float(point.as_int if point.WhichOneof("value") == "as_int" else point.as_double),
                "attributes": _text_pairs(point.attributes),
                "timestamp_unix_nano": point.time_unix_nano,
            }
            for point in data.data_points
        ]
    if kind == "histogram":
        return "histogram", [
            {
                "count": point.count,
                "sum": point.sum,
                "bucket_counts": list(point.bucket_counts),
                "explicit_bounds": list(point.explicit_bounds),
                "min": point.min if point.HasField("min") else None,
                "max": point.max if point.HasField("max") else None,
                "attributes": _text_pairs(point.attributes),
                "timestamp_unix_nano": point.time_unix_nano,
            }
            for point in metric.histogram.data_points
        ]
    return "gauge", []
