"""Decoding the SDKs' telemetry messages (OTLP/JSON behind a 4-byte tag) into the stores' records."""

from __future__ import annotations

import json

import pytest

from iii.modules.observability import otlp
from tests.modules.observability.frames import (
    CHILD,
    ROOT,
    SERVICE,
    TRACE,
    logs_message,
    metrics_message,
    span,
    spans_message,
)


def test_spans_keep_their_hex_ids_parent_status_and_attributes() -> None:
    child = span("execute orders.get", CHILD, parent=ROOT)
    child["status"] = {"code": 2, "message": "boom"}
    signal, records = otlp.decode(spans_message(span("call orders.get", ROOT), child))
    assert signal == "spans"
    root, decoded = records
    assert (root["trace_id"], root["span_id"], root["parent_span_id"]) == (TRACE, ROOT, None)
    assert (decoded["parent_span_id"], decoded["status"], decoded["status_description"]) == (ROOT, "error", "boom")
    assert decoded["attributes"] == [["function_id", "orders.get"]]
    assert decoded["end_time_unix_nano"] - decoded["start_time_unix_nano"] == 5_000_000
    assert root["service_name"] == SERVICE and root["status"] == "unset"


def test_log_records_keep_body_level_attributes_and_resource() -> None:
    signal, records = otlp.decode(logs_message("first", "second", traceId=TRACE, spanId=ROOT))
    assert signal == "logs"
    assert [record["body"] for record in records] == ["first", "second"]
    first = records[0]
    assert (first["severity_number"], first["severity_text"], first["service_name"]) == (9, "INFO", SERVICE)
    assert first["attributes"] == {"n": 0}
    assert (first["trace_id"], first["span_id"]) == (TRACE, ROOT)
    assert first["resource"] == {"service.name": SERVICE}
    assert records[1]["timestamp_unix_nano"] - first["timestamp_unix_nano"] == 1


def test_a_record_without_severity_text_gets_its_levels_name() -> None:
    """The Node SDK's Logger sends severityNumber only."""
    _, records = otlp.decode(logs_message("warned", severity=14, text=""))
    assert records[0]["severity_text"] == "WARN"
    assert [otlp.severity_name(n) for n in (0, 1, 5, 9, 13, 17, 21, 24)] == [
        "",
        "TRACE",
        "DEBUG",
        "INFO",
        "WARN",
        "ERROR",
        "FATAL",
        "FATAL",
    ]


def test_structured_values_and_the_python_sdks_hex_bytes_decode() -> None:
    message = logs_message("x")
    document = json.loads(message[4:])
    document["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["attributes"] = [
        {"key": "raw", "value": {"bytesValue": "00ff"}},
        {
            "key": "data",
            "value": {
                "kvlistValue": {
                    "values": [
                        {"key": "a", "value": {"arrayValue": {"values": [{"doubleValue": 1.5}, {"boolValue": True}]}}}
                    ]
                }
            },
        },
    ]
    _, records = otlp.decode(b"LOGS" + json.dumps(document).encode())
    assert records[0]["attributes"] == {"raw": "00ff", "data": {"a": [1.5, True]}}


def test_base64_bytes_as_protobufs_json_writes_them_decode_to_hex() -> None:
    document = json.loads(logs_message("x")[4:])
    document["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["attributes"] = [
        {"key": "raw", "value": {"bytesValue": "AP8="}}
    ]
    _, records = otlp.decode(b"LOGS" + json.dumps(document).encode())
    assert records[0]["attributes"] == {"raw": "00ff"}


def test_metrics_carry_their_type_and_points() -> None:
    signal, records = otlp.decode(metrics_message("worker.memory", 42))
    assert signal == "metrics"
    (metric,) = records
    assert (metric["name"], metric["metric_type"], metric["unit"]) == ("worker.memory", "gauge", "By")
    assert metric["data_points"] == [
        {"value": 42.0, "attributes": [], "timestamp_unix_nano": 1_700_000_000_000_000_000}
    ]


@pytest.mark.parametrize(
    "message",
    [
        b"XXXX{}",
        b"LOGS not json",
        b"LOGS\xff\xfe",
        b"OTLP[1, 2]",
        b"OTLP" + json.dumps({"resourceSpans": 5}).encode(),
        spans_message(span("a", "not-hex!")),
        b"",
    ],
    ids=["unknown tag", "not JSON", "not UTF-8", "not an object", "wrong field type", "id not hex", "empty"],
)
def test_a_malformed_message_is_refused_with_the_reason(message: bytes) -> None:
    with pytest.raises(otlp.MalformedTelemetry):
        otlp.decode(message)


def test_unknown_fields_are_ignored_as_otlp_requires() -> None:
    document = json.loads(logs_message("kept")[4:])
    document["somethingNew"] = {"x": 1}
    document["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["eventName"] = "e"
    _, records = otlp.decode(b"LOGS" + json.dumps(document).encode())
    assert [record["body"] for record in records] == ["kept"]
