"""OTLP/JSON telemetry messages as the official SDKs write them (hex ids, int64s as strings), for the tests."""

from __future__ import annotations

import itertools
import json
from typing import Any

SERVICE = "orders-worker"
TRACE = "0af7651916cd43dd8448eb211c80319c"
ROOT = "b7ad6b7169203331"
CHILD = "00f067aa0ba902b7"
BASE_NS = 1_700_000_000_000_000_000
_later = itertools.count()
"""Each log message's records are later than the previous message's."""


def _resource(service: str) -> dict[str, Any]:
    return {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}


def logs_message(*bodies: str, service: str = SERVICE, severity: int = 9, text: str = "INFO", **record: Any) -> bytes:
    """A ``LOGS`` message with one record per body."""
    first = BASE_NS + next(_later) * 1000
    records = [
        {
            "timeUnixNano": str(first + index),
            "severityNumber": severity,
            "severityText": text,
            "body": {"stringValue": body},
            "attributes": [{"key": "n", "value": {"intValue": index}}],
            **record,
        }
        for index, body in enumerate(bodies)
    ]
    document = {"resourceLogs": [{"resource": _resource(service), "scopeLogs": [{"logRecords": records}]}]}
    return b"LOGS" + json.dumps(document).encode()


def span(
    name: str, span_id: str, parent: str = "", trace: str = TRACE, start_ms: int = 0, ms: int = 5
) -> dict[str, Any]:
    start = 1_700_000_000_000_000_000 + start_ms * 1_000_000
    return {
        "traceId": trace,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + ms * 1_000_000),
        "attributes": [{"key": "function_id", "value": {"stringValue": name.removeprefix("execute ")}}],
        "status": {"code": 0},
    }


def spans_message(*spans: dict[str, Any], service: str = SERVICE) -> bytes:
    document = {"resourceSpans": [{"resource": _resource(service), "scopeSpans": [{"spans": list(spans)}]}]}
    return b"OTLP" + json.dumps(document).encode()


def metrics_message(name: str = "worker.memory", value: int = 42, service: str = SERVICE) -> bytes:
    point = {"timeUnixNano": "1700000000000000000", "asInt": str(value), "attributes": []}
    metric = {"name": name, "unit": "By", "gauge": {"dataPoints": [point]}}
    document = {"resourceMetrics": [{"resource": _resource(service), "scopeMetrics": [{"metrics": [metric]}]}]}
    return b"MTRC" + json.dumps(document).encode()
