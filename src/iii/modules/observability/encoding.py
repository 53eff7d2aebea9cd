"""The stores' records written back as OTLP/JSON export requests, and export requests joined into one, for the
collector the module forwards to (:mod:`.export`).

A record made in the engine (``engine::log::*``, the engine's own spans) has no message it came from; it is
written here in OTLP/JSON as the OTLP specification has it (lowerCamelCase names, trace and span ids in hex,
64-bit integers as strings), grouped by resource (its ``service.name``) and instrumentation scope: the inverse of
:mod:`.otlp`'s decoding. A span's attributes are text (the stores keep them so) and go as strings.

Export requests of one signal are joined by concatenating their top-level lists (``resourceLogs``, ...):
each element goes as it was received (``msgspec.Raw``), so what an SDK sent reaches the collector unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from iii.protocol import otlp as otlp_json

RESOURCE_KEYS: Final = {"logs": "resourceLogs", "spans": "resourceSpans", "metrics": "resourceMetrics"}
"""Each signal's top-level list in its export request."""
_SCOPE_KEYS: Final = {"logs": "scopeLogs", "spans": "scopeSpans", "metrics": "scopeMetrics"}
_ITEM_KEYS: Final = {"logs": "logRecords", "spans": "spans", "metrics": "metrics"}
_STATUS_CODES: Final = {"unset": 0, "ok": 1, "error": 2}
_KINDS: Final = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}

_encoder = msgspec.json.Encoder()


class _Request(msgspec.Struct):
    """An export request's top-level list, its elements undecoded."""

    resource_logs: list[msgspec.Raw] = msgspec.field(default_factory=list, name="resourceLogs")
    resource_spans: list[msgspec.Raw] = msgspec.field(default_factory=list, name="resourceSpans")
    resource_metrics: list[msgspec.Raw] = msgspec.field(default_factory=list, name="resourceMetrics")


_request_decoder = msgspec.json.Decoder(_Request)


def join(signal: str, bodies: list[bytes]) -> bytes:
    """One export request of ``signal`` holding every resource of ``bodies`` (OTLP/JSON export requests of that
    signal), in order; a single body is returned as it is. ``msgspec.DecodeError`` for a body that is not one."""
    if len(bodies) == 1:
        return bodies[0]
    attribute = {"logs": "resource_logs", "spans": "resource_spans", "metrics": "resource_metrics"}[signal]
    joined: list[msgspec.Raw] = []
    for body in bodies:
        joined.extend(getattr(_request_decoder.decode(body), attribute))
    return _encoder.encode({RESOURCE_KEYS[signal]: joined})


def encode(signal: str, records: Iterable[Mapping[str, Any]]) -> bytes:
    """An OTLP/JSON export request of ``signal`` (``"logs"``, ``"spans"``, ``"metrics"``) holding ``records``
    (in the stores' shapes), grouped by resource and scope in the order they first appear."""
    item = {"logs": _log, "spans": _span, "metrics": _metric}[signal]
    resources: dict[str, tuple[dict[str, Any], dict[tuple[str, str], list[dict[str, Any]]]]] = {}
    for record in records:
        attributes = _resource_of(record)
        key = _encoder.encode(sorted(attributes.items())).decode()
        _, scopes = resources.setdefault(key, (attributes, {}))
        scope = (record.get("instrumentation_scope_name") or "", record.get("instrumentation_scope_version") or "")
        scopes.setdefault(scope, []).append(item(record))
    document = {
        RESOURCE_KEYS[signal]: [
            {
                "resource": {"attributes": _key_values(attributes)},
                _SCOPE_KEYS[signal]: [
                    {"scope": _scope(name, version), _ITEM_KEYS[signal]: items}
                    for (name, version), items in scopes.items()
                ],
            }
            for attributes, scopes in resources.values()
        ]
    }
    return _encoder.encode(document)


def _resource_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record's resource attributes, its ``service_name`` as ``service.name`` (unless unknown)."""
    resource = record.get("resource")
    attributes = dict(resource) if isinstance(resource, Mapping) else {}
    service = record.get("service_name")
    if isinstance(service, str) and service and service != "unknown":
        attributes["service.name"] = service
    return attributes


def _scope(name: str, version: str) -> dict[str, str]:
    scope = {"name": name} if name else {}
    if version:
        scope["version"] = version
    return scope


def _key_values(attributes: Any) -> list[dict[str, Any]]:
    """Attributes as OTLP ``KeyValue`` s: a mapping, or ``[key, value]`` pairs (as spans keep them), or None."""
    return otlp_json.attributes(attributes or ())


def _nanos(value: Any) -> str:
    return str(int(value or 0))


def _log(record: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "timeUnixNano": _nanos(record.get("timestamp_unix_nano")),
        "observedTimeUnixNano": _nanos(record.get("observed_timestamp_unix_nano")),
        "severityNumber": int(record.get("severity_number") or 0),
        "severityText": record.get("severity_text") or "",
        "body": otlp_json.any_value(record.get("body")),
        "attributes": _key_values(record.get("attributes")),
    }
    for field, key in (("trace_id", "traceId"), ("span_id", "spanId")):
        if record.get(field):
            entry[key] = record[field]
    return entry


def _span(record: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "traceId": record.get("trace_id") or "",
        "spanId": record.get("span_id") or "",
        "name": record.get("name") or "",
        "startTimeUnixNano": _nanos(record.get("start_time_unix_nano")),
        "endTimeUnixNano": _nanos(record.get("end_time_unix_nano")),
        "attributes": _key_values(record.get("attributes")),
        "status": {"code": _STATUS_CODES.get(str(record.get("status") or "unset"), 0)},
        "events": [
            {
                "name": event.get("name") or "",
                "timeUnixNano": _nanos(event.get("timestamp_unix_nano")),
                "attributes": _key_values(event.get("attributes")),
            }
            for event in record.get("events") or ()
        ],
        "links": [
            {
                "traceId": link.get("trace_id") or "",
                "spanId": link.get("span_id") or "",
                **({"traceState": link["trace_state"]} if link.get("trace_state") else {}),
                "attributes": _key_values(link.get("attributes")),
            }
            for link in record.get("links") or ()
        ],
    }
    if record.get("parent_span_id"):
        entry["parentSpanId"] = record["parent_span_id"]
    if record.get("status_description"):
        entry["status"]["message"] = record["status_description"]
    kind = record.get("kind")
    if isinstance(kind, int) or (isinstance(kind, str) and kind.lower() in _KINDS):
        entry["kind"] = kind if isinstance(kind, int) else _KINDS[kind.lower()]
    if record.get("flags"):
        entry["flags"] = int(record["flags"])
    return entry


def _metric(record: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": record.get("name") or "",
        "description": record.get("description") or "",
        "unit": record.get("unit") or "",
    }
    metric_type = record.get("metric_type")
    points = record.get("data_points") or ()
    if metric_type == "histogram":
        entry["histogram"] = {"dataPoints": [_histogram_point(point) for point in points], "aggregationTemporality": 2}
        return entry
    numbers = {"dataPoints": [_number_point(point) for point in points]}
    if metric_type in ("counter", "updowncounter"):
        entry["sum"] = {**numbers, "isMonotonic": metric_type == "counter", "aggregationTemporality": 2}
    else:
        entry["gauge"] = numbers
    return entry


def _number_point(point: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "timeUnixNano": _nanos(point.get("timestamp_unix_nano")),
        "asDouble": float(point.get("value") or 0.0),
        "attributes": _key_values(point.get("attributes")),
    }


def _histogram_point(point: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "timeUnixNano": _nanos(point.get("timestamp_unix_nano")),
        "count": _nanos(point.get("count")),
        "sum": float(point.get("sum") or 0.0),
        "bucketCounts": [_nanos(count) for count in point.get("bucket_counts") or ()],
        "explicitBounds": [float(bound) for bound in point.get("explicit_bounds") or ()],
        "attributes": _key_values(point.get("attributes")),
    }
    for bound in ("min", "max"):
        if point.get(bound) is not None:
            entry[bound] = float(point[bound])
    return entry
