"""otlp.py's records checked against the OpenTelemetry protobuf definitions (``opentelemetry-proto``).

Each OTLP/JSON message is also parsed by protobuf's JSON parser into the export request it stands for (after
turning OTLP/JSON's hex ids, and the Python SDK's hex bytes, into the base64 protobuf's JSON mapping expects), and
the records are derived here from those protobuf objects, without otlp.py; the decoder's records must be the same.
A message protobuf's parser refuses must be one the decoder refuses, or decodes as documented below.
"""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from iii.modules.observability import otlp
from tests.modules.observability.frames import (
    CHILD,
    ROOT,
    TRACE,
    logs_message,
    metrics_message,
    span,
    spans_message,
)
from tests.otlp_json import hex_ids_to_base64

Doc = dict[str, Any]
Pair = tuple[Any, Any]
"""A piece of a message as sent (OTLP/JSON) and as protobuf's JSON mapping has it."""

# --- the oracle: records from the protobuf objects ---------------------------------------------------------


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return getattr(any_value, kind)


def _text(any_value: Any) -> str:
    value = _value(any_value)
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _pairs(attributes: Any) -> list[list[str]]:
    return [[kv.key, _text(kv.value)] for kv in attributes]


def _service(resource: Any) -> str:
    return {kv.key: _text(kv.value) for kv in resource.attributes}.get("service.name") or "unknown"


def _optional_id(raw: bytes) -> str | None:
    return raw.hex() if any(raw) else None


def _scope(entry: Doc, scope: Any) -> Doc:
    if scope.name:
        entry["instrumentation_scope_name"] = scope.name
    if scope.version:
        entry["instrumentation_scope_version"] = scope.version
    return entry


_LEVELS = {range(1, 5): "TRACE", range(5, 9): "DEBUG", range(9, 13): "INFO", range(13, 17): "WARN"}
_LEVELS |= {range(17, 21): "ERROR", range(21, 25): "FATAL"}


def _level(number: int) -> str:
    return next((name for numbers, name in _LEVELS.items() if number in numbers), "")


NOW = -1
"""Stands for "the time of decoding" in an expected record."""


def expected_logs(request: ExportLogsServiceRequest) -> list[Doc]:
    records = []
    for resource_logs in request.resource_logs:
        resource = {kv.key: _text(kv.value) for kv in resource_logs.resource.attributes}
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                observed = record.observed_time_unix_nano or NOW
                entry = {
                    "timestamp_unix_nano": record.time_unix_nano or observed,
                    "observed_timestamp_unix_nano": observed,
                    "severity_number": record.severity_number,
                    "severity_text": record.severity_text or _level(record.severity_number),
                    "body": _text(record.body) if record.HasField("body") else "",
                    "attributes": {kv.key: _value(kv.value) for kv in record.attributes},
                    "trace_id": _optional_id(record.trace_id),
                    "span_id": _optional_id(record.span_id),
                    "resource": resource,
                    "service_name": resource.get("service.name") or "unknown",
                }
                records.append(_scope(entry, scope_logs.scope))
    return records


def expected_spans(request: ExportTraceServiceRequest) -> list[Doc]:
    records = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span_ in scope_spans.spans:
                entry: Doc = {
                    "trace_id": span_.trace_id.hex(),
                    "span_id": span_.span_id.hex(),
                    "parent_span_id": _optional_id(span_.parent_span_id),
                    "name": span_.name,
                    "start_time_unix_nano": span_.start_time_unix_nano,
                    "end_time_unix_nano": span_.end_time_unix_nano,
                    "status": {1: "ok", 2: "error"}.get(span_.status.code, "unset"),
                    "attributes": _pairs(span_.attributes),
                    "service_name": _service(resource_spans.resource),
                    "events": [
                        {"name": e.name, "timestamp_unix_nano": e.time_unix_nano, "attributes": _pairs(e.attributes)}
                        for e in span_.events
                    ],
                    "links": [
                        {
                            "trace_id": link.trace_id.hex(),
                            "span_id": link.span_id.hex(),
                            "trace_state": link.trace_state or None,
                            "attributes": _pairs(link.attributes),
                        }
                        for link in span_.links
                    ],
                }
                if span_.status.message:
                    entry["status_description"] = span_.status.message
                _scope(entry, scope_spans.scope)
                if span_.flags:
                    entry["flags"] = span_.flags
                records.append(entry)
    return records


def _metric_points(metric: Any) -> tuple[str, list[Doc]]:
    kind = metric.WhichOneof("data")
    if kind in ("gauge", "sum"):
        numbers = getattr(metric, kind)
        metric_type = "gauge" if kind == "gauge" else "counter" if metric.sum.is_monotonic else "updowncounter"
        return metric_type, [
            {
                "value": float(getattr(point, point.WhichOneof("value") or "as_double")),
                "attributes": _pairs(point.attributes),
                "timestamp_unix_nano": point.time_unix_nano,
            }
            for point in numbers.data_points
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
                "attributes": _pairs(point.attributes),
                "timestamp_unix_nano": point.time_unix_nano,
            }
            for point in metric.histogram.data_points
        ]
    return "gauge", []


def expected_metrics(request: ExportMetricsServiceRequest) -> list[Doc]:
    records = []
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                metric_type, points = _metric_points(metric)
                entry = {
                    "name": metric.name,
                    "description": metric.description,
                    "unit": metric.unit,
                    "metric_type": metric_type,
                    "data_points": points,
                    "service_name": _service(resource_metrics.resource),
                    "timestamp_unix_nano": max((p["timestamp_unix_nano"] for p in points), default=0) or NOW,
                }
                records.append(_scope(entry, scope_metrics.scope))
    return records


_ORACLES: dict[bytes, tuple[type[Message], Callable[[Any], list[Doc]]]] = {
    b"LOGS": (ExportLogsServiceRequest, expected_logs),
    b"OTLP": (ExportTraceServiceRequest, expected_spans),
    b"MTRC": (ExportMetricsServiceRequest, expected_metrics),
}


def protobuf_request(tag: bytes, protobuf_json: Doc) -> Message:
    """The export request protobuf's JSON parser makes of a message (:class:`json_format.ParseError` if none)."""
    request = _ORACLES[tag][0]()
    json_format.ParseDict(protobuf_json, request, ignore_unknown_fields=True)
    return request


def assert_same_records(tag: bytes, sent: Doc, protobuf_json: Doc | None = None) -> list[Doc]:
    """otlp.py's records of the message ``sent`` are the oracle's (``protobuf_json``: the message in protobuf's
    JSON mapping, by default ``sent`` with its hex ids in base64)."""
    if protobuf_json is None:
        protobuf_json = hex_ids_to_base64(sent)
    expected = _ORACLES[tag][1](protobuf_request(tag, protobuf_json))
    before = time.time_ns()
    signal, records = otlp.decode(tag + json.dumps(sent).encode())
    after = time.time_ns()
    assert signal == otlp.SIGNALS[tag]
    _settle_now(expected, records, before, after)
    assert records == expected
    return records


def _settle_now(expected: list[Doc], records: list[Doc], before: int, after: int) -> None:
    """Each expected time that is "the time of decoding" replaced by the decoder's, which must be within it."""
    for want, got in zip(expected, records, strict=False):
        for key, value in want.items():
            if value == NOW:
                assert before <= got.get(key, 0) <= after, key
                want[key] = got[key]


# --- messages ----------------------------------------------------------------------------------------------

_texts = st.text(max_size=12)
_uint64 = st.integers(0, 2**64 - 1)
_time = st.one_of(st.just(0), st.integers(1, 2**63 - 1))


_int64 = st.integers(-(2**63), 2**63 - 1).flatmap(lambda n: st.sampled_from([n, str(n)]))
"""A 64-bit integer as OTLP/JSON sends it: a string (protobuf's JSON) or a number (as some writers do)."""


def _unsigned(strategy: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    return strategy.flatmap(lambda n: st.sampled_from([n, str(n)]))


_doubles = st.floats(allow_nan=False, allow_infinity=False)
_json_doubles = st.one_of(_doubles, _doubles.map(repr), st.sampled_from(["Infinity", "-Infinity"]))
"""A double as JSON has it: a number, or a string as protobuf's JSON allows (the infinities only so)."""


def _bytes_pair(raw: bytes) -> st.SearchStrategy[Pair]:
    """A bytes value as the Python SDK writes it (hex) or as protobuf's JSON does (base64, never also hex)."""
    encoded = base64.b64encode(raw).decode()
    hex_pair = st.just(({"bytesValue": raw.hex()}, {"bytesValue": encoded}))
    if _is_hex(encoded):
        return hex_pair  # ambiguous: see test_base64_bytes_that_read_as_hex_are_hex
    return st.one_of(hex_pair, st.just(({"bytesValue": encoded}, {"bytesValue": encoded})))


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _same(document: Any) -> Pair:
    return document, copy.deepcopy(document)


_scalar_values: st.SearchStrategy[Pair] = st.one_of(
    _texts.map(lambda s: _same({"stringValue": s})),
    st.booleans().map(lambda b: _same({"boolValue": b})),
    _int64.map(lambda n: _same({"intValue": n})),
    _json_doubles.map(lambda d: _same({"doubleValue": d})),
    st.binary(max_size=12).flatmap(_bytes_pair),
    st.just(_same({})),
)


def _compound(children: st.SearchStrategy[Pair]) -> st.SearchStrategy[Pair]:
    arrays = st.lists(children, max_size=4).map(
        lambda items: (
            {"arrayValue": {"values": [sent for sent, _ in items]}},
            {"arrayValue": {"values": [proto for _, proto in items]}},
        )
    )
    kvlists = st.lists(st.tuples(_texts, children), max_size=4).map(
        lambda items: (
            {"kvlistValue": {"values": [{"key": k, "value": sent} for k, (sent, _) in items]}},
            {"kvlistValue": {"values": [{"key": k, "value": proto} for k, (_, proto) in items]}},
        )
    )
    return st.one_of(arrays, kvlists)


any_values: st.SearchStrategy[Pair] = st.recursive(_scalar_values, _compound, max_leaves=8)


def _key_values(keys: st.SearchStrategy[str] = _texts) -> st.SearchStrategy[Pair]:
    return st.lists(st.tuples(keys, any_values), max_size=4).map(
        lambda items: (
            [{"key": k, "value": sent} for k, (sent, _) in items],
            [{"key": k, "value": proto} for k, (_, proto) in items],
        )
    )


def _hex_id(size: int) -> st.SearchStrategy[str]:
    """An id in hex, lower or upper case; sometimes all zeros or empty (not set)."""
    return st.one_of(
        st.binary(min_size=size, max_size=size).flatmap(lambda raw: st.sampled_from([raw.hex(), raw.hex().upper()])),
        st.sampled_from(["", "00" * size]),
    )


@st.composite
def _optional(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> Doc:
    """Some of ``fields``, each as drawn."""
    return {name: draw(strategy) for name, strategy in fields.items() if draw(st.booleans())}


@st.composite
def resources_and_scopes(draw: st.DrawFn) -> tuple[Pair, Doc]:
    service = draw(st.one_of(st.none(), any_values, _texts.map(lambda s: _same({"stringValue": s}))))
    sent, proto = draw(_key_values(st.sampled_from(["host.name", "service.version", "x"])))
    if service is not None:
        sent, proto = (
            [*sent, {"key": "service.name", "value": service[0]}],
            [
                *proto,
                {"key": "service.name", "value": service[1]},
            ],
        )
    scope = draw(_optional({"name": _texts, "version": _texts}))
    return ({"attributes": sent}, {"attributes": proto}), scope


def _envelope(resource_key: str, scope_key: str, items_key: str, items: list[Pair], resource: Pair, scope: Doc) -> Pair:
    def document(index: int) -> Doc:
        scoped = {"scope": scope, items_key: [item[index] for item in items]}
        return {resource_key: [{"resource": resource[index], scope_key: [scoped]}]}

    return document(0), document(1)


@st.composite
def log_messages(draw: st.DrawFn) -> Pair:
    records = []
    for _ in range(draw(st.integers(0, 3))):
        attributes = draw(_key_values())
        record = draw(
            _optional(
                {
                    "timeUnixNano": _unsigned(_time),
                    "observedTimeUnixNano": _unsigned(_time),
                    "severityNumber": st.integers(0, 24),
                    "severityText": st.sampled_from(["", "INFO", "warning", "Error"]),
                }
            )
        )
        body = draw(st.one_of(st.none(), any_values))
        ids = draw(_optional({"traceId": _hex_id(16), "spanId": _hex_id(8)}))
        sent, proto = {**record, **ids, "attributes": attributes[0]}, {**record, **ids, "attributes": attributes[1]}
        if body is not None:
            sent["body"], proto["body"] = body
        records.append((sent, hex_ids_to_base64(proto)))
    resource, scope = draw(resources_and_scopes())
    return _envelope("resourceLogs", "scopeLogs", "logRecords", records, resource, scope)


@st.composite
def span_messages(draw: st.DrawFn) -> Pair:
    def with_attributes(fields: Doc) -> Pair:
        sent, proto = draw(_key_values())
        return {**fields, "attributes": sent}, {**fields, "attributes": proto}

    spans = []
    for _ in range(draw(st.integers(0, 3))):
        fields = draw(
            _optional(
                {
                    "parentSpanId": _hex_id(8),
                    "name": _texts,
                    "kind": st.integers(0, 5),
                    "startTimeUnixNano": _unsigned(_time),
                    "endTimeUnixNano": _unsigned(_time),
                    "status": _optional({"code": st.integers(0, 2), "message": _texts}),
                    "flags": st.integers(0, 2**32 - 1),
                }
            )
        )
        fields |= {"traceId": draw(_hex_id(16)), "spanId": draw(_hex_id(8))}
        sent, proto = with_attributes(fields)
        events = [
            with_attributes(draw(_optional({"name": _texts, "timeUnixNano": _unsigned(_time)})))
            for _ in range(draw(st.integers(0, 2)))
        ]
        links = [
            with_attributes(
                {"traceId": draw(_hex_id(16)), "spanId": draw(_hex_id(8))}
                | draw(_optional({"traceState": st.sampled_from(["", "vendor=1"])}))
            )
            for _ in range(draw(st.integers(0, 2)))
        ]
        sent |= {"events": [e[0] for e in events], "links": [link[0] for link in links]}
        proto |= {"events": [e[1] for e in events], "links": [link[1] for link in links]}
        spans.append((sent, hex_ids_to_base64(proto)))
    resource, scope = draw(resources_and_scopes())
    return _envelope("resourceSpans", "scopeSpans", "spans", spans, resource, scope)


@st.composite
def _number_point(draw: st.DrawFn) -> Pair:
    attributes = draw(_key_values())
    fields = draw(_optional({"timeUnixNano": _unsigned(_time), "startTimeUnixNano": _unsigned(_time)}))
    value = draw(
        st.one_of(
            st.just({}),
            _int64.map(lambda n: {"asInt": n}),
            _json_doubles.map(lambda d: {"asDouble": d}),
        )
    )
    return {**fields, **value, "attributes": attributes[0]}, {**fields, **value, "attributes": attributes[1]}


@st.composite
def _histogram_point(draw: st.DrawFn) -> Pair:
    attributes = draw(_key_values())
    bounds = sorted(draw(st.lists(_doubles, max_size=4)))
    fields = draw(
        _optional(
            {
                "timeUnixNano": _unsigned(_time),
                "count": _unsigned(_uint64),
                "sum": _json_doubles,
                "min": _json_doubles,
                "max": _json_doubles,
            }
        )
    )
    buckets = draw(st.lists(_unsigned(_uint64), min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    fields |= {"bucketCounts": buckets, "explicitBounds": bounds} if draw(st.booleans()) else {}
    return {**fields, "attributes": attributes[0]}, {**fields, "attributes": attributes[1]}


@st.composite
def metric_messages(draw: st.DrawFn) -> Pair:
    metrics = []
    for _ in range(draw(st.integers(0, 3))):
        fields = draw(_optional({"name": _texts, "description": _texts, "unit": st.sampled_from(["", "By", "ms"])}))
        kind = draw(st.sampled_from(["gauge", "sum", "histogram", None]))
        points = draw(st.lists(_histogram_point() if kind == "histogram" else _number_point(), max_size=3))
        sent, proto = dict(fields), dict(fields)
        if kind is not None:
            extra = draw(_optional({"isMonotonic": st.booleans(), "aggregationTemporality": st.integers(0, 2)}))
            extra = extra if kind == "sum" else {}
            sent[kind] = {**extra, "dataPoints": [p[0] for p in points]}
            proto[kind] = {**extra, "dataPoints": [p[1] for p in points]}
        metrics.append((sent, proto))
    resource, scope = draw(resources_and_scopes())
    return _envelope("resourceMetrics", "scopeMetrics", "metrics", metrics, resource, scope)


# --- the checks --------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(log_messages())
def test_log_records_are_the_oracles(message: Pair) -> None:
    assert_same_records(b"LOGS", *message)


@settings(max_examples=300, deadline=None)
@given(span_messages())
def test_spans_are_the_oracles(message: Pair) -> None:
    assert_same_records(b"OTLP", *message)


@settings(max_examples=300, deadline=None)
@given(metric_messages())
def test_metrics_are_the_oracles(message: Pair) -> None:
    assert_same_records(b"MTRC", *message)


def _sdk_span_with_everything() -> Doc:
    child = span("execute orders.get", CHILD, parent=ROOT)
    child["status"] = {"code": 2, "message": "boom"}
    child["events"] = [{"name": "exception", "timeUnixNano": "1700000000000000001", "attributes": []}]
    child["links"] = [{"traceId": TRACE, "spanId": ROOT, "traceState": "a=b", "attributes": []}]
    child["flags"] = 257
    return child


@pytest.mark.parametrize(
    "message",
    [
        logs_message("first", "second", traceId=TRACE, spanId=ROOT),
        logs_message("warned", severity=14, text=""),
        logs_message("no ids"),
        spans_message(span("call orders.get", ROOT), _sdk_span_with_everything()),
        metrics_message("worker.memory", 42),
    ],
    ids=["logs with ids", "log without severity text", "log without ids", "spans", "metric"],
)
def test_the_sdks_messages_decode_as_the_oracle_has_them(message: bytes) -> None:
    assert_same_records(message[:4], json.loads(message[4:]))


def test_base64_bytes_that_read_as_hex_are_hex() -> None:
    """The decoder's policy for a ``bytesValue`` that is both valid hex and valid base64: hex (the Python SDK's
    encoding), so there it disagrees with protobuf's JSON mapping (base64 only); the other SDKs send no bytes."""
    raw = base64.b64decode("00ff")
    document = json.loads(logs_message("x")[4:])
    record = document["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    record["attributes"] = [{"key": "raw", "value": {"bytesValue": "00ff"}}]
    assert expected_logs(protobuf_request(b"LOGS", document))[0]["attributes"] == {"raw": raw.hex()}
    _, records = otlp.decode(b"LOGS" + json.dumps(document).encode())
    assert records[0]["attributes"] == {"raw": "00ff"}


# --- what protobuf's parser refuses ------------------------------------------------------------------------


def _log_with(**fields: Any) -> tuple[bytes, Doc]:
    document = json.loads(logs_message("x")[4:])
    document["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0].update(fields)
    return b"LOGS", document


def _metric_with(**fields: Any) -> tuple[bytes, Doc]:
    document = json.loads(metrics_message()[4:])
    document["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0].update(fields)
    return b"MTRC", document


_POINT = {"timeUnixNano": "5", "asInt": "7"}

REFUSED_BY_BOTH = {
    "not an object": (b"LOGS", [1]),
    "a list where an object is": (b"LOGS", {"resourceLogs": {"x": 1}}),
    "an int that is not a number": _log_with(timeUnixNano="soon"),
    "a fractional int": _log_with(timeUnixNano=1.5),
    "a bool that is a string": _log_with(body={"boolValue": "yes"}),
    "a double that is not a number": _log_with(body={"doubleValue": "many"}),
    "a string value that is a number": _log_with(severityText=5),
}
"""Messages protobuf's parser refuses (checked below) that the decoder refuses too."""

DECODED_ANYWAY = {
    "two values of a oneof (the first in the decoder's order wins)": (
        _log_with(body={"stringValue": "s", "intValue": "1"}),
        {"body": "s"},
    ),
    "a gauge and a sum (the gauge wins, as a gauge)": (
        _metric_with(gauge={"dataPoints": [_POINT]}, sum={"isMonotonic": True, "dataPoints": []}),
        {"metric_type": "gauge", "data_points": [{"value": 7.0, "attributes": [], "timestamp_unix_nano": 5}]},
    ),
    "a negative time (kept, as sent)": (_log_with(timeUnixNano=-3), {"timestamp_unix_nano": -3}),
    "an intValue beyond int64 (kept)": (_log_with(body={"intValue": str(2**64)}), {"body": str(2**64)}),
}
"""Messages protobuf's parser refuses that the decoder takes, being lenient as OTLP receivers should: each with
fields of the one record it gives."""


REFUSED_BY_THE_DECODER_ONLY = {
    "an enum by name": _log_with(severityNumber="SEVERITY_NUMBER_INFO"),
    "a status code by name": (
        b"OTLP",
        json.loads(spans_message({**span("a", ROOT), "status": {"code": "STATUS_CODE_OK"}})[4:]),
    ),
    "bytes neither hex nor base64": _log_with(body={"bytesValue": "!!"}),
}
"""Messages protobuf's parser takes that the decoder refuses: OTLP/JSON sends enums as numbers only, and
protobuf's Python parser drops the characters that are not base64 (``"!!"`` is no bytes), where the decoder says
the message is malformed rather than keep a value that is not the one sent."""


@pytest.mark.parametrize("case", REFUSED_BY_THE_DECODER_ONLY.values(), ids=REFUSED_BY_THE_DECODER_ONLY.keys())
def test_what_otlp_json_does_not_allow_the_decoder_refuses(case: tuple[bytes, Doc]) -> None:
    tag, document = case
    protobuf_request(tag, hex_ids_to_base64(document))
    with pytest.raises(otlp.MalformedTelemetry):
        otlp.decode(tag + json.dumps(document).encode())


@pytest.mark.parametrize("case", REFUSED_BY_BOTH.values(), ids=REFUSED_BY_BOTH.keys())
def test_what_protobuf_refuses_the_decoder_refuses(case: tuple[bytes, Any]) -> None:
    tag, document = case
    with pytest.raises((json_format.ParseError, TypeError, AttributeError)):
        protobuf_request(tag, hex_ids_to_base64(document))
    with pytest.raises(otlp.MalformedTelemetry):
        otlp.decode(tag + json.dumps(document).encode())


@pytest.mark.parametrize("case", DECODED_ANYWAY.values(), ids=DECODED_ANYWAY.keys())
def test_what_protobuf_refuses_the_decoder_takes_as_documented(case: tuple[tuple[bytes, Doc], Doc]) -> None:
    (tag, document), fields = case
    with pytest.raises(json_format.ParseError):
        protobuf_request(tag, hex_ids_to_base64(document))
    _, (record,) = otlp.decode(tag + json.dumps(document).encode())
    assert {key: record[key] for key in fields} == fields
