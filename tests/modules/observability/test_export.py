"""Forwarding to an OTLP/HTTP collector (``--otlp-endpoint``): what the engine keeps reaches a real collector
(:mod:`tests.modules.observability.collector`, decoding with opentelemetry-proto), as sent when it came from an
SDK's message, encoded when the engine made it; retried while the collector is down or busy, bounded and counted
when it stays down, and never in the engine's way.

In-process engines on ephemeral ports; telemetry sent on ``/otel`` by raw WebSockets as the SDKs frame it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from iii.engine.config import EngineConfig, load_toml
from iii.engine.modules import build
from iii.engine.server import Engine
from iii.modules.observability import ObservabilityModule
from iii.modules.observability.export import SHUTDOWN_FLUSH_S
from tests.engine.wire import RawWorker, connect_raw, eventually, scrape
from tests.modules.observability.collector import Collector
from tests.modules.observability.frames import CHILD, ROOT, TRACE, logs_message, metrics_message, span, spans_message

StartEngine = Callable[..., Awaitable[Engine]]


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    running = await Collector().start()
    yield running
    await running.stop()


def observability(engine: Engine) -> ObservabilityModule:
    module = next(module for module in engine.modules.modules if module.name == "observability")
    assert isinstance(module, ObservabilityModule)
    return module


def exported(engine: Engine, signal: str, outcome: str = "exported") -> int:
    exporter = observability(engine)._exporter
    assert exporter is not None
    return exporter.counts.get((signal, outcome), 0)


async def test_an_sdks_messages_reach_the_collector_as_they_were_sent(
    start_engine: StartEngine, collector: Collector
) -> None:
    engine = await start_engine(otlp_endpoint=collector.url)
    telemetry = await connect_raw(engine.url + "/otel")
    sent = [
        logs_message("first", "second"),
        spans_message(span("execute orders.create", ROOT), span("call", CHILD, parent=ROOT)),
        metrics_message("worker.memory", 42),
    ]
    for message in sent:
        await telemetry.send(message)
    await collector.wait_until(
        lambda: (
            {received.path for received in collector.received}
            >= {
                "/v1/logs",
                "/v1/traces",
                "/v1/metrics",
            }
        )
    )
    by_path = {received.path: received.document for received in collector.received}
    assert by_path["/v1/logs"] == json.loads(sent[0][4:])
    assert by_path["/v1/traces"] == json.loads(sent[1][4:])
    assert by_path["/v1/metrics"] == json.loads(sent[2][4:])
    assert collector.bodies() == ["first", "second"]
    [(service, root), (_, child)] = collector.spans()
    assert (service, root.trace_id.hex(), root.span_id.hex(), root.name) == (
        "orders-worker",
        TRACE,
        ROOT,
        "execute orders.create",
    )
    assert child.parent_span_id.hex() == ROOT
    assert collector.received[0].headers["Content-Type"] == "application/json"
    assert not collector.problems
    await telemetry.close()


async def test_messages_queued_together_go_in_one_request_in_order(
    start_engine: StartEngine, collector: Collector
) -> None:
    engine = await start_engine(otlp_endpoint=collector.url)
    telemetry = await connect_raw(engine.url + "/otel")
    lines = [f"line {index}" for index in range(50)]
    for line in lines:
        await telemetry.send(logs_message(line))
    await collector.wait_until(lambda: len(collector.bodies()) == len(lines))
    assert collector.bodies() == lines
    assert len(collector.received) < len(lines)  # joined into fewer requests
    await eventually(lambda: exported(engine, "logs") == len(lines))  # counted once the answer is read
    await telemetry.close()


async def test_the_engines_own_log_records_reach_the_collector_encoded_as_otlp(
    start_engine: StartEngine, collector: Collector
) -> None:
    engine = await start_engine(otlp_endpoint=collector.url)
    worker = await RawWorker.connect(engine.url)
    payload = {"message": "from the engine", "data": {"order": 7, "ok": True, "tags": ["a"]}, "trace_id": TRACE}
    payload |= {"span_id": ROOT, "service_name": "orders"}
    assert await worker.result_of("engine::log::warn", payload) is None
    await collector.wait_until(lambda: len(collector.logs()) == 1)
    [record] = collector.logs()
    [stored] = (await worker.result_of("engine::logs::list", {}))["logs"]
    assert record.body.string_value == "from the engine"
    assert (record.severity_number, record.severity_text) == (13, "WARN")
    assert (record.trace_id.hex(), record.span_id.hex()) == (TRACE, ROOT)
    assert record.time_unix_nano == stored["timestamp_unix_nano"] > 0
    attributes = {kv.key: kv.value for kv in record.attributes}
    assert attributes["order"].int_value == 7 and attributes["ok"].bool_value is True
    assert [value.string_value for value in attributes["tags"].array_value.values] == ["a"]
    resource = collector.received[0].request.resource_logs[0].resource  # type: ignore[attr-defined]
    assert {kv.key: kv.value.string_value for kv in resource.attributes}["service.name"] == "orders"


async def test_headers_set_for_the_collector_are_sent(start_engine: StartEngine, collector: Collector) -> None:
    engine = await start_engine(otlp_endpoint=collector.url, otlp_headers="api-key=s%3Dcret, x-team = core")
    worker = await RawWorker.connect(engine.url)
    await worker.result_of("engine::log::info", {"message": "with headers"})
    await collector.wait_until(lambda: len(collector.received) == 1)
    headers = collector.received[0].headers
    assert (headers["api-key"], headers["x-team"]) == ("s=cret", "core")


async def test_busy_answers_are_retried_and_every_record_arrives_once(
    start_engine: StartEngine, collector: Collector
) -> None:
    collector.answers = [503, 429, 502]
    engine = await start_engine(otlp_endpoint=collector.url)
    telemetry = await connect_raw(engine.url + "/otel")
    await telemetry.send(logs_message("busy", "then taken"))
    await collector.wait_until(lambda: len(collector.received) == 1)
    assert collector.attempts == 4
    assert collector.bodies() == ["busy", "then taken"]
    await eventually(lambda: exported(engine, "logs") == 2)
    _, samples = await scrape(engine)
    labels = "module=observability,signal=logs"
    assert samples[("iii_observability_export_retries_total", labels)] == 3
    assert samples[("iii_observability_export_records_total", labels.replace(",", ",outcome=exported,", 1))] == 2
    await telemetry.close()


async def test_a_refused_request_is_dropped_and_counted_and_the_next_ones_go_on(
    start_engine: StartEngine, collector: Collector
) -> None:
    collector.answers = [400]
    engine = await start_engine(otlp_endpoint=collector.url)
    telemetry = await connect_raw(engine.url + "/otel")
    await telemetry.send(logs_message("refused"))
    await eventually(lambda: exported(engine, "logs", "rejected") == 1)
    await telemetry.send(logs_message("taken"))
    await collector.wait_until(lambda: collector.bodies() == ["taken"])
    assert collector.attempts == 2
    await telemetry.close()


async def test_a_collector_down_then_up_gets_the_records_that_fit(
    start_engine: StartEngine, collector: Collector
) -> None:
    await collector.stop()  # down: its port refuses connections
    engine = await start_engine(
        otlp_endpoint=collector.url, module_settings={"observability": {"otlp_queue_max_records": 5}}
    )
    worker = await RawWorker.connect(engine.url)
    telemetry = await connect_raw(engine.url + "/otel")
    exporter = observability(engine)._exporter
    assert exporter is not None
    await telemetry.send(logs_message("first"))
    await eventually(lambda: exporter.retries["logs"] >= 1)  # "first" is being retried
    for index in range(12):
        await telemetry.send(logs_message(f"line {index}"))
    await eventually(lambda: exporter.queued_records == 5 and exported(engine, "logs", "queue_full") == 7)
    listed = await worker.result_of("engine::logs::list", {"limit": 100})
    assert len(listed["logs"]) == 13  # the engine kept them all meanwhile
    await collector.start()  # up, on the same port
    await collector.wait_until(lambda: len(collector.bodies()) == 6)
    assert collector.bodies() == ["first", *[f"line {index}" for index in range(7, 12)]]
    await eventually(lambda: exported(engine, "logs") == 6)
    assert exporter.queued_records == 0
    await telemetry.close()


async def test_a_collector_that_stays_down_costs_records_counted_and_nothing_else(
    start_engine: StartEngine, collector: Collector
) -> None:
    await collector.stop()
    engine = await start_engine(
        otlp_endpoint=collector.url, module_settings={"observability": {"otlp_queue_max_bytes": 4096}}
    )
    worker = await RawWorker.connect(engine.url)
    telemetry = await connect_raw(engine.url + "/otel")
    exporter = observability(engine)._exporter
    assert exporter is not None
    for index in range(100):
        await telemetry.send(logs_message(f"line {index}", "x" * 100))
    await eventually(lambda: exported(engine, "logs", "queue_full") > 0 and exporter.retries["logs"] >= 2)
    assert exporter.queued_bytes <= 4096
    answer = await worker.result_of("engine::logs::list", {"limit": 1})
    assert answer["total"] == 200  # ingestion and calls go on
    await worker.ping()
    queued = exporter.queued_records
    in_flight = sum(batch.records for batch in exporter._sending[1]) if exporter._sending else 0
    dropped = exported(engine, "logs", "queue_full")
    assert queued + in_flight + dropped == 200
    started = time.monotonic()
    await engine.stop()
    assert time.monotonic() - started < SHUTDOWN_FLUSH_S + 3
    assert exported(engine, "logs", "shutdown") == queued + in_flight
    assert exported(engine, "logs") == 0


async def test_bad_settings_are_refused_with_their_names(start_engine: StartEngine) -> None:
    with pytest.raises(ValueError, match="otlp_endpoint must be an http:// or https:// URL"):
        await start_engine(otlp_endpoint="localhost:4318")
    with pytest.raises(ValueError, match="otlp_headers: 'no-equals' is not key=value"):
        await start_engine(otlp_endpoint="http://127.0.0.1:4318", otlp_headers="a=b,no-equals")


def test_the_endpoint_and_headers_come_from_the_table_unless_the_environment_or_a_flag_gives_them(
    tmp_path: Path,
) -> None:
    config_file = tmp_path / "engine.toml"
    config_file.write_text('[observability]\notlp_endpoint = "http://127.0.0.1:1/table"\notlp-headers = "a=1"\n')
    from_file = load_toml(str(config_file))

    def settings(flags: dict[str, Any], environ: dict[str, str]) -> tuple[str | None, str | None]:
        config = EngineConfig.from_sources(flags, environ=environ, file_values=from_file)
        module = build("observability", config)
        assert isinstance(module, ObservabilityModule)
        return module.settings.otlp_endpoint, module.settings.otlp_headers

    env = {"III_ENGINE_OTLP_ENDPOINT": "http://127.0.0.1:2/env"}
    assert settings({}, {}) == ("http://127.0.0.1:1/table", "a=1")
    assert settings({}, env) == ("http://127.0.0.1:2/env", "a=1")
    assert settings({"otlp_endpoint": "http://127.0.0.1:3/flag", "otlp_headers": "b=2"}, env) == (
        "http://127.0.0.1:3/flag",
        "b=2",
    )
    config_file.write_text('otlp_endpoint = "http://127.0.0.1:1"\n')
    with pytest.raises(ValueError, match=r"otlp_endpoint goes in the \[observability\] table"):
        load_toml(str(config_file))


def test_a_bad_endpoint_stops_the_engine_command_with_a_clear_error() -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "iii", "engine", "--port", "0", "--http-port", "-1", "--otlp-endpoint", "host:4318"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "III_ENGINE_DATA_DIR": tempfile.gettempdir()},
    )
    assert refused.returncode == 2, refused.stderr
    assert "otlp_endpoint must be an http:// or https:// URL" in refused.stderr
    assert "Traceback" not in refused.stderr
