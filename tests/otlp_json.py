"""OTLP/JSON as the OpenTelemetry protobuf definitions read it: the iii SDKs write trace and span ids in hex,
protobuf's JSON mapping wants bytes in base64. The tests that check messages against ``opentelemetry-proto``
(the engine's decoder, our SDK's encoder, the export tests' collector) convert with :func:`hex_ids_to_base64`."""

from __future__ import annotations

import base64
from typing import Any

ID_KEYS = ("traceId", "spanId", "parentSpanId")


def hex_ids_to_base64(node: Any) -> Any:
    """``node`` (a decoded OTLP/JSON document, or part of one) with its hex ids in base64."""
    if isinstance(node, list):
        return [hex_ids_to_base64(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: base64.b64encode(bytes.fromhex(value)).decode()
        if key in ID_KEYS and isinstance(value, str)
        else hex_ids_to_base64(value)
        for key, value in node.items()
    }
