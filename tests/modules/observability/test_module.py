"""The observability module's functions, on an in-process host: what the telemetry it receives becomes."""

from __future__ import annotations

from typing import Any

from iii.modules.api import MetricSample
from iii.protocol.errors import DESERIALIZATION_ERROR
from tests.modules.local_host import LocalHost
from tests.modules.observability.conftest import StartObservability
from tests.modules.observability.frames import (
    CHILD,
    ROOT,
    TRACE,
    logs_message,
    metrics_message,
    span,
    spans_message,
)


def send(host: LocalHost, message: bytes) -> None:
    assert host.telemetry is not None, "the module does not receive telemetry"
    host.telemetry.receive(message)


def samples(module: Any, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found: list[MetricSample] = [sample for sample in module.metrics() if sample.name == name]
    return {tuple(sorted(sample.labels.items())): sample.value for sample in found}


async def test_logs_list_answers_newest_first_with_the_references_filters(
    start_observability: StartObservability,
) -> None:
    _, host = await start_observability()
    send(host, logs_message("a", "b", "c"))
    send(host, logs_message("boom", severity=17, text="ERROR", service="billing", traceId=TRACE))
    every = await host.call("engine::logs::list", {})
    assert [row["body"] for row in every["logs"]] == ["boom", "c", "b", "a"]
    assert every["total"] == 4
    errors = await host.call("engine::logs::list", {"severity_min": 17})
    assert [row["body"] for row in errors["logs"]] == ["boom"]
    assert [row["body"] for row in (await host.call("engine::logs::list", {"severity_text": "error"}))["logs"]] == [
        "boom"
    ]
    assert (await host.call("engine::logs::list", {"trace_id": TRACE}))["total"] == 1
    assert (await host.call("engine::logs::list", {"service_name": "BILL"}))["total"] == 1
    page = await host.call("engine::logs::list", {"service_name": "orders", "offset": 1, "limit": 1})
    assert ([row["body"] for row in page["logs"]], page["total"]) == (["b"], 3)
    assert page["query"]["offset"] == 1 and isinstance(page["timestamp"], int)
    # times are Unix milliseconds in the filters, nanoseconds in the records
    assert (await host.call("engine::logs::list", {"end_time": 1_699_999_999_999}))["total"] == 0
    assert await host.call("engine::logs::clear", {}) == {"success": True}
    assert (await host.call("engine::logs::list", {}))["total"] == 0


async def test_logs_list_selects_a_functions_records_by_their_stored_spans(
    start_observability: StartObservability,
) -> None:
    _, host = await start_observability()
    send(host, logs_message("getting", traceId=TRACE, spanId=CHILD))
    send(host, logs_message("calling", traceId=TRACE, spanId=ROOT))
    assert (await host.call("engine::logs::list", {"function_id": "orders.get"}))["total"] == 0  # span not yet in
    send(host, spans_message({**span("execute orders.get", CHILD, parent=ROOT), "attributes": []}))
    found = await host.call("engine::logs::list", {"function_id": "orders.get"})
    assert [row["body"] for row in found["logs"]] == ["getting"]
    error = await host.call_error("engine::logs::list", {"function_id": ["orders.get"]})
    assert error.code == DESERIALIZATION_ERROR


async def test_a_worker_logs_through_engine_log_functions(start_observability: StartObservability) -> None:
    _, host = await start_observability()
    assert await host.call("engine::log::warn", {"message": "disk low", "data": {"free": 3}, "trace_id": TRACE}) is None
    await host.call("engine::log::debug", {"message": "detail", "service_name": "orders"})
    rows = (await host.call("engine::logs::list", {}))["logs"]
    by_body = {row["body"]: row for row in rows}
    warn = by_body["disk low"]
    assert (warn["severity_text"], warn["severity_number"], warn["attributes"], warn["trace_id"]) == (
        "WARN",
        13,
        {"free": 3},
        TRACE,
    )
    assert warn["worker_id"] == "test-worker" and warn["service_name"] == "unknown"
    assert by_body["detail"]["severity_number"] == 5 and by_body["detail"]["service_name"] == "orders"
    for level in ("trace", "info", "error"):
        await host.call(f"engine::log::{level}", {"message": level})
    numbers = {row["body"]: row["severity_number"] for row in (await host.call("engine::logs::list", {}))["logs"]}
    assert (numbers["trace"], numbers["info"], numbers["error"]) == (1, 9, 17)
    error = await host.call_error("engine::log::info", {"data": {}})
    assert error.code == DESERIALIZATION_ERROR


async def test_traces_list_shows_root_spans_and_the_tree_nests_them(start_observability: StartObservability) -> None:
    _, host = await start_observability()
    send(
        host, spans_message(span("call orders.get", ROOT, ms=10), span("execute orders.get", CHILD, parent=ROOT, ms=4))
    )
    other = "1" * 32
    send(host, spans_message(span("execute engine::functions::list", "2" * 16, trace=other, start_ms=50)))
    roots = await host.call("engine::traces::list", {})
    assert [row["name"] for row in roots["spans"]] == ["call orders.get"]  # engine::* ones are internal
    assert (roots["total"], roots["offset"], roots["limit"]) == (1, 0, 100)
    assert roots["storage"]["completeness"] == "complete"
    internal = await host.call("engine::traces::list", {"include_internal": True, "sort_order": "desc"})
    assert [row["trace_id"] for row in internal["spans"]] == [other, TRACE]
    every = await host.call("engine::traces::list", {"search_all_spans": True, "sort_by": "duration"})
    assert [row["name"] for row in every["spans"]] == ["execute orders.get", "call orders.get"]
    slow = await host.call("engine::traces::list", {"search_all_spans": True, "min_duration_ms": 5})
    assert [row["name"] for row in slow["spans"]] == ["call orders.get"]
    tagged = await host.call(
        "engine::traces::list", {"search_all_spans": True, "attributes": [["function_id", "orders.get"]]}
    )
    assert [row["name"] for row in tagged["spans"]] == ["execute orders.get"]
    tree = await host.call("engine::traces::tree", {"trace_id": TRACE})
    (root,) = tree["roots"]
    assert root["span_id"] == ROOT and [child["span_id"] for child in root["children"]] == [CHILD]
    assert (await host.call("engine::traces::tree", {"trace_id": "f" * 32}))["roots"] == []
    assert (await host.call_error("engine::traces::tree", {})).code == DESERIALIZATION_ERROR


async def test_metrics_list_has_the_sdks_metrics_and_invocations_from_spans(
    start_observability: StartObservability,
) -> None:
    _, host = await start_observability()
    send(host, metrics_message("worker.memory", 42))
    failed = span("execute orders.get", CHILD, parent=ROOT, ms=8)
    failed["status"] = {"code": 2}
    send(host, spans_message(span("execute orders.get", ROOT, ms=2), failed))
    answer = await host.call("engine::metrics::list", {"metric_name": "worker.memory"})
    assert [metric["name"] for metric in answer["sdk_metrics"]] == ["worker.memory"]
    invocations = answer["engine_metrics"]["invocations"]
    assert (invocations["total"], invocations["success"], invocations["error"]) == (2, 1, 1)
    assert invocations["by_function"] == {"orders.get": 2}
    assert answer["engine_metrics"]["performance"]["max_duration_ms"] == 8.0
    assert (await host.call("engine::metrics::list", {"metric_name": "other"}))["sdk_metrics"] == []


async def test_health_check_reports_each_store(start_observability: StartObservability) -> None:
    _, host = await start_observability()
    send(host, logs_message("one"))
    health = await host.call("engine::health::check", {})
    assert health["status"] == "healthy"
    assert set(health["components"]) == {"otel", "metrics", "logs", "spans"}
    assert health["components"]["logs"] == {"status": "healthy", "details": {"stored_logs": 1, "dropped": 0}}


async def test_malformed_messages_are_counted_and_dropped_and_the_next_one_is_kept(
    start_observability: StartObservability,
) -> None:
    module, host = await start_observability()
    send(host, b"LOGS{not json")
    send(host, b"JUNK")
    send(host, logs_message("after"))
    assert [row["body"] for row in (await host.call("engine::logs::list", {}))["logs"]] == ["after"]
    counted = samples(module, "observability_messages_total")
    assert counted[(("outcome", "malformed"), ("signal", "logs"))] == 1
    assert counted[(("outcome", "malformed"), ("signal", "unknown"))] == 1
    assert counted[(("outcome", "stored"), ("signal", "logs"))] == 1


async def test_a_message_over_max_message_bytes_is_dropped_undecoded(start_observability: StartObservability) -> None:
    module, host = await start_observability(max_message_bytes=400)
    send(host, logs_message("x" * 400))
    send(host, logs_message("fits"))
    assert [row["body"] for row in (await host.call("engine::logs::list", {}))["logs"]] == ["fits"]
    assert samples(module, "observability_messages_total")[(("outcome", "too_large"), ("signal", "logs"))] == 1


async def test_the_bounds_hold_the_oldest_records_go_and_are_counted(start_observability: StartObservability) -> None:
    module, host = await start_observability(logs_max_count=3, spans_max_count=100, spans_max_bytes=5000)
    for index in range(5):
        send(host, logs_message(f"line {index}"))
    assert [row["body"] for row in (await host.call("engine::logs::list", {}))["logs"]] == [
        "line 4",
        "line 3",
        "line 2",
    ]
    for index in range(10):
        send(host, spans_message(span(f"execute f{index}", f"{index + 1:016x}")))
    kept = await host.call("engine::traces::list", {"search_all_spans": True})
    assert 0 < kept["total"] < 10 and kept["spans"][-1]["name"] == "execute f9"
    assert kept["storage"]["completeness"] == "partial"
    dropped = samples(module, "observability_dropped_total")
    assert dropped[(("signal", "logs"),)] == 2
    assert dropped[(("signal", "spans"),)] == 10 - kept["total"]
    assert samples(module, "observability_bytes")[(("signal", "spans"),)] <= 5000
