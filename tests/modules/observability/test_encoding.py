"""encoding.py writes the stores' records back as OTLP/JSON: decoded again by otlp.py they are the same records,
and protobuf's JSON parser (opentelemetry-proto) takes what it writes. Joined export requests hold every
resource of the ones joined, each as it was."""

from __future__ import annotations

import json

import msgspec
import pytest

from iii.modules.observability import encoding, otlp
from tests.modules.observability.frames import CHILD, ROOT, logs_message, metrics_message, span, spans_message
from tests.modules.observability.test_otlp_oracle import protobuf_request
from tests.otlp_json import hex_ids_to_base64

TAGS = {"logs": otlp.LOGS, "spans": otlp.SPANS, "metrics": otlp.METRICS}

MESSAGES = {
    "logs": [
        logs_message("plain", "second", service="orders"),
        logs_message("with ids", traceId="0af7651916cd43dd8448eb211c80319c", spanId=ROOT, service="billing"),
        logs_message("warned", severity=13, text="WARN", observedTimeUnixNano="1700000000000000123"),
    ],
    "spans": [
        spans_message(span("execute a", ROOT), span("call b", CHILD, parent=ROOT)),
        spans_message(
            {
                **span("failed", "1111111111111111"),
                "status": {"code": 2, "message": "boom"},
                "events": [{"name": "retry", "timeUnixNano": "5", "attributes": []}],
                "links": [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": ROOT, "traceState": "k=v"}],
                "flags": 1,
            },
            service="other",
        ),
    ],
    "metrics": [metrics_message("worker.memory", 42)],
}


@pytest.mark.parametrize("signal", ["logs", "spans", "metrics"])
def test_records_encoded_decode_to_the_same_records_and_parse_as_protobuf(signal: str) -> None:
    records = [record for message in MESSAGES[signal] for record in otlp.decode(message)[1]]
    body = encoding.encode(signal, records)
    assert otlp.decode(TAGS[signal] + body) == (signal, records)
    protobuf_request(TAGS[signal], hex_ids_to_base64(json.loads(body)))  # raises if protobuf refuses it


def test_an_engine_log_record_keeps_its_data_typed_and_its_service() -> None:
    record = {
        "timestamp_unix_nano": 1_700_000_000_000_000_001,
        "observed_timestamp_unix_nano": 1_700_000_000_000_000_001,
        "severity_number": 17,
        "severity_text": "ERROR",
        "body": "from the engine",
        "attributes": {"n": 3, "ratio": 0.5, "ok": False, "nested": {"list": [1, "two", None]}},
        "trace_id": None,
        "span_id": None,
        "resource": {"service.name": "iii"},
        "service_name": "orders",
        "instrumentation_scope_name": "iii",
        "instrumentation_scope_version": "1.0",
    }
    [decoded] = otlp.decode(otlp.LOGS + encoding.encode("logs", [record]))[1]
    assert decoded["attributes"] == record["attributes"]
    assert decoded["service_name"] == "orders"
    assert {key: decoded[key] for key in ("body", "severity_number", "severity_text", "timestamp_unix_nano")} == {
        key: record[key] for key in ("body", "severity_number", "severity_text", "timestamp_unix_nano")
    }


def test_joined_requests_hold_every_resource_as_it_was_sent() -> None:
    bodies = [message[4:] for message in MESSAGES["logs"]]
    joined = json.loads(encoding.join("logs", bodies))
    assert joined == {"resourceLogs": [json.loads(body)["resourceLogs"][0] for body in bodies]}
    assert encoding.join("logs", bodies[:1]) is bodies[0]
    with pytest.raises(msgspec.DecodeError):
        encoding.join("logs", [b"{", b"{}"])
