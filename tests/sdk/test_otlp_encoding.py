"""The telemetry messages our SDK sends (:mod:`iii.protocol.otlp`) checked against the OpenTelemetry protobuf
definitions (``opentelemetry-proto``): protobuf's JSON parser, refusing unknown fields, reads each message into
the export request it stands for (after turning the hex ids, the iii convention, into the base64 protobuf's
JSON mapping expects), and every field must hold what the SDK meant. The engine's decoder must read the same.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from iii.modules.observability import otlp as decoder
from iii.protocol import otlp
from iii.protocol.trace_context import parse_traceparent
from iii.sdk.telemetry.settings import TelemetrySettings
from iii.sdk.telemetry.spans import ExecutionSpan, baggage_entries, encoded_span
from tests.otlp_json import hex_ids_to_base64

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
RESOURCE = TelemetrySettings(service_name="svc", service_instance_id="one").resource()
SCOPE = otlp.Scope("iii-py", "1.2.3")


def _parsed(message: bytes, request: Any) -> Any:
    return json_format.Parse(
        json.dumps(hex_ids_to_base64(json.loads(message[4:]))), request, ignore_unknown_fields=False
    )


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind)


def test_a_span_message_is_an_export_trace_request_with_every_field_as_meant() -> None:
    span = ExecutionSpan("execute orders.get", TRACE, PARENT, "tenant=acme,plan=gold;ttl=5")
    failed = encoded_span(span, span.start_ns + 1500, {"code": "bad", "message": "no", "stacktrace": "Trace..."})
    root = encoded_span(ExecutionSpan("execute root", TRACE, None, None), span.start_ns + 9, None)
    message = otlp.spans_message(RESOURCE, SCOPE, [failed, root])
    assert message[:4] == otlp.SPANS

    request = _parsed(message, ExportTraceServiceRequest())
    (resource_spans,) = request.resource_spans
    resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
    assert resource["service.name"] == "svc" and resource["service.instance.id"] == "one"
    assert resource["telemetry.sdk.language"] == "python"
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("iii-py", "1.2.3")
    first, second = scope_spans.spans
    assert first.trace_id.hex() == TRACE and first.parent_span_id.hex() == PARENT
    assert first.span_id.hex() == span.span_id and len(first.span_id) == 8
    assert first.name == "execute orders.get" and first.kind == 1  # internal, as the official SDKs'
    assert first.start_time_unix_nano == span.start_ns and first.end_time_unix_nano == span.start_ns + 1500
    assert (first.status.code, first.status.message) == (2, "no")
    assert {kv.key: _value(kv.value) for kv in first.attributes} == {"tenant": "acme", "plan": "gold"}
    (event,) = first.events
    assert event.name == "exception"
    assert {kv.key: _value(kv.value) for kv in event.attributes} == {
        "exception.message": "no",
        "exception.type": "bad",
        "exception.stacktrace": "Trace...",
    }
    assert second.parent_span_id == b"" and second.status.code == 1 and second.kind == 1
    assert second.name == "execute root" and not second.events and not second.attributes

    signal, records = decoder.decode(message)
    assert signal == "spans"
    assert [(r["span_id"], r["parent_span_id"], r["status"]) for r in records] == [
        (span.span_id, PARENT, "error"),
        (second.span_id.hex(), None, "ok"),
    ]
    assert records[0]["service_name"] == "svc" and records[0]["status_description"] == "no"


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


def _expected(value: Any) -> Any:
    """A value as protobuf has it after the round trip (bytes stay bytes)."""
    if isinstance(value, (list, tuple)):
        return [_expected(item) for item in value]
    if isinstance(value, dict):
        return {key: _expected(item) for key, item in value.items()}
    return value


@given(st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=4), st.text())
def test_a_log_message_is_an_export_logs_request_holding_any_attribute_value(
    attributes: dict[str, Any], body: str
) -> None:
    record = otlp.LogRecord(
        time_unix_nano="1700000000000000001",
        observed_time_unix_nano="1700000000000000002",
        severity_number=13,
        severity_text="WARN",
        body={"stringValue": body},
        attributes=otlp.attributes(attributes),
        trace_id=TRACE,
        span_id=PARENT,
    )
    bare = otlp.LogRecord("1", "1", 9, "INFO", {"stringValue": "x"})
    request = _parsed(otlp.logs_message(RESOURCE, SCOPE, [record, bare]), ExportLogsServiceRequest())
    first, second = request.resource_logs[0].scope_logs[0].log_records
    assert first.time_unix_nano == 1700000000000000001 and first.observed_time_unix_nano == 1700000000000000002
    assert (first.severity_number, first.severity_text, first.body.string_value) == (13, "WARN", body)
    assert first.trace_id.hex() == TRACE and first.span_id.hex() == PARENT
    assert {kv.key: _value(kv.value) for kv in first.attributes} == _expected(attributes)
    assert second.trace_id == b"" and second.span_id == b""


def test_traceparent_and_baggage_are_read_as_w3c_defines_them() -> None:
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-01") == (TRACE, PARENT, "01")
    sampled, unsampled = parse_traceparent(f"00-{TRACE}-{PARENT}-01"), parse_traceparent(f"00-{TRACE}-{PARENT}-00")
    assert sampled is not None and sampled.sampled and unsampled is not None and not unsampled.sampled
    assert parse_traceparent(f"01-{TRACE}-{PARENT}-01-future") == (TRACE, PARENT, "01")
    # Upper-case hex is not a traceparent: W3C trace context's grammar has lower-case hex only (HEXDIGLC) and a
    # receiver ignores a header that does not parse; the SDK then starts a new trace, as the engine does. So is a
    # version-00 header with more after it (version 00 is exactly 55 characters).
    upper, longer = f"00-{TRACE.upper()}-{PARENT}-00", f"00-{TRACE}-{PARENT}-01-more"
    for bad in (None, "", "garbage", f"ff-{TRACE}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-xyz-01"):
        assert parse_traceparent(bad) is None, bad
    assert parse_traceparent(f"00-{TRACE}-{'0' * 16}-01") is None
    assert parse_traceparent(upper) is None and parse_traceparent(longer) is None
    assert baggage_entries("a=1, b = two%20words ;prop=x,broken,=nokey") == [("a", "1"), ("b", "two words")]


@given(st.text(), st.text(), st.integers(min_value=0, max_value=2**64 - 1), st.dictionaries(st.text(), values))
def test_a_span_holds_any_name_status_message_time_and_attributes(
    name: str, message: str, start: int, attributes: dict[str, Any]
) -> None:
    text = otlp.span_json(
        TRACE,
        PARENT,
        None,
        name,
        start,
        start,
        status_code=otlp.STATUS_ERROR,
        status_message=message,
        attributes=otlp.attributes(attributes),
    )
    request = _parsed(otlp.spans_message(RESOURCE, SCOPE, [text]), ExportTraceServiceRequest())
    (span,) = request.resource_spans[0].scope_spans[0].spans
    assert (span.name, span.status.message, span.start_time_unix_nano) == (name, message, start)
    assert {kv.key: _value(kv.value) for kv in span.attributes} == _expected(attributes)
