"""The ``log`` and ``trace`` trigger types of the observability module, on an in-process host: which records and
spans reach which bindings, in what shape, coalesced and bounded, and that a delivery never fires its own
trigger again."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from iii.modules.api import MetricSample
from iii.modules.observability.triggers import (
    LOG_PAYLOAD_FIELDS,
    DeliveryTraces,
    ObservabilityTriggers,
    record_level,
    traceparent_ids,
)
from tests.modules.local_host import LocalHost
from tests.modules.observability.conftest import StartObservability
from tests.modules.observability.frames import logs_message, span, spans_message

WAIT_S = 5.0
OTHER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
THIRD_TRACE = "5bf92f3577b34da6a3ce929d0e0e4737"


def inbox(host: LocalHost, function_id: str) -> asyncio.Queue[Any]:
    """Serve ``function_id`` as a worker's function that puts each payload it gets in the returned queue."""
    received: asyncio.Queue[Any] = asyncio.Queue()
    host.serve(function_id, received.put_nowait)
    return received


async def next_of(received: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(received.get(), WAIT_S)


def counter(source: Any, name: str, **labels: str) -> float:
    found: list[MetricSample] = [
        sample for sample in source.metrics() if sample.name == name and dict(sample.labels) == labels
    ]
    assert len(found) == 1, f"{name}{labels} reported {len(found)} times"
    return found[0].value


def test_a_records_level_is_its_severity_range_or_else_its_text() -> None:
    assert [record_level({"severity_number": n}) for n in (1, 4, 5, 9, 12, 13, 17, 20, 21, 24)] == [
        "trace",
        "trace",
        "debug",
        "info",
        "info",
        "warn",
        "error",
        "error",
        "fatal",
        "fatal",
    ]
    assert record_level({"severity_number": 0, "severity_text": "WARNING"}) == "warn"
    assert record_level({"severity_number": 0, "severity_text": "Error"}) == "error"
    assert record_level({"severity_number": 0, "severity_text": ""}) is None


def test_delivery_traces_are_recognised_and_others_are_not() -> None:
    traces = DeliveryTraces()
    traceparent = traces.traceparent()
    version, trace_id, span_id, flags = traceparent.split("-")
    assert (version, len(trace_id), len(span_id), flags) == ("00", 32, 16, "01")
    assert traces.caused(trace_id)
    assert not traces.caused(OTHER_TRACE) and not traces.caused(None) and not traces.caused(trace_id[:31])
    assert not DeliveryTraces().caused(trace_id), "another module's key must not recognise this one's traces"


def test_a_traceparent_names_its_trace_and_span() -> None:
    assert traceparent_ids(f"00-{OTHER_TRACE}-00f067aa0ba902b7-01") == (OTHER_TRACE, "00f067aa0ba902b7")
    assert traceparent_ids(f"00-{OTHER_TRACE.upper()}-00F067AA0BA902B7-00") == (OTHER_TRACE, "00f067aa0ba902b7")
    for bad in (None, "", "00-xyz-00f067aa0ba902b7-01", f"00-{'0' * 32}-00f067aa0ba902b7-01", f"00-{OTHER_TRACE}-01"):
        assert traceparent_ids(bad) == (None, None), bad


async def test_engine_log_records_carry_the_trace_context_of_the_call_unless_given_ids(
    start_observability: StartObservability,
) -> None:
    _, host = await start_observability()
    traceparent = f"00-{OTHER_TRACE}-00f067aa0ba902b7-01"
    await host.call("engine::log::info", {"message": "in context"}, traceparent=traceparent)
    await host.call("engine::log::info", {"message": "own ids", "trace_id": THIRD_TRACE}, traceparent=traceparent)
    rows = {row["body"]: row for row in (await host.call("engine::logs::list", {}))["logs"]}
    assert (rows["in context"]["trace_id"], rows["in context"]["span_id"]) == (OTHER_TRACE, "00f067aa0ba902b7")
    assert (rows["own ids"]["trace_id"], rows["own ids"]["span_id"]) == (THIRD_TRACE, None)


async def test_a_log_binding_gets_the_records_of_its_level_in_the_references_shape(
    start_observability: StartObservability,
) -> None:
    module, host = await start_observability()
    errors, everything = inbox(host, "alerts::on-error"), inbox(host, "audit::all")
    _, refused = host.bind("log", "alerts::on-error", {"level": "ERROR"})
    assert refused is None
    assert host.bind("log", "audit::all", {})[1] is None
    assert host.telemetry is not None
    host.telemetry.receive(logs_message("fine", "still fine"))
    host.telemetry.receive(logs_message("boom", severity=17, text="ERROR", traceId=OTHER_TRACE))
    await host.call("engine::log::error", {"message": "disk gone", "data": {"disk": "sda"}})

    first, second = await next_of(errors), await next_of(errors)
    assert [first["body"], second["body"]] == ["boom", "disk gone"]
    assert list(first) == list(LOG_PAYLOAD_FIELDS)
    assert (first["severity_number"], first["severity_text"], first["trace_id"]) == (17, "ERROR", OTHER_TRACE)
    assert first["service_name"] == "orders-worker" and first["attributes"] == {"n": 0}
    assert second["attributes"] == {"disk": "sda"} and "worker_id" not in second
    assert [(await next_of(everything))["body"] for _ in range(4)] == ["fine", "still fine", "boom", "disk gone"]
    assert errors.empty() and everything.empty()
    assert counter(module, "observability_trigger_deliveries_total", trigger_type="log", outcome="delivered") == 6


async def test_a_log_binding_with_an_unknown_level_is_refused(start_observability: StartObservability) -> None:
    _, host = await start_observability()
    assert "`level` must be one of" in str(host.bind("log", "f", {"level": "loud"})[1])
    assert "`level` must be one of" in str(host.bind("log", "f", {"level": 3})[1])
    assert host.bind("log", "f", {"level": "all"})[1] is None
    assert "`status` must be a string" in str(host.bind("trace", "f", {"status": 1})[1])


async def test_a_log_delivery_carries_the_bindings_metadata_in_a_trace_of_its_own(
    start_observability: StartObservability,
) -> None:
    _, host = await start_observability()
    received = inbox(host, "audit::all")
    binding, _ = host.bind("log", "audit::all", {})
    host.trigger_types["log"].deactivate(binding)
    assert host.trigger_types["log"].activate(dataclasses.replace(binding, metadata={"__binding": "wake-1"})) is None
    await host.call("engine::log::info", {"message": "hello"})
    await next_of(received)
    metadata, traceparent = host.call_context[-1]
    assert metadata == {"__binding": "wake-1"}
    assert traceparent is not None and traceparent.startswith("00-")


async def test_what_a_log_handler_logs_in_its_delivery_trace_does_not_fire_log_triggers_again(
    start_observability: StartObservability,
) -> None:
    """A handler bound to every level that logs a line per record it gets would call itself forever; the lines
    it logs in the trace its delivery runs in are kept, but fire no ``log`` trigger."""
    module, host = await start_observability()
    handled: asyncio.Queue[str] = asyncio.Queue()

    async def handler(record: dict[str, Any]) -> None:
        _, traceparent = host.call_context[-1]  # what an SDK passes on to the calls its handler makes
        await host.call("engine::log::info", {"message": f"handled {record['body']}"}, traceparent=traceparent)
        handled.put_nowait(record["body"])

    host.serve("audit::all", handler)
    host.bind("log", "audit::all", {})
    await host.call("engine::log::info", {"message": "one"})
    assert await asyncio.wait_for(handled.get(), WAIT_S) == "one"
    assert module.triggers is not None
    await module.triggers.deliveries.settle()
    assert handled.empty(), "the handler's own line was delivered to it"
    assert counter(module, "observability_trigger_loop_skipped_total", trigger_type="log") == 1
    listed = await host.call("engine::logs::list", {})
    assert [row["body"] for row in listed["logs"]] == ["handled one", "one"]


async def test_log_deliveries_waiting_for_a_slow_binding_are_bounded_and_the_drops_counted() -> None:
    host = LocalHost()
    triggers = ObservabilityTriggers(host, max_waiting=3)
    triggers.register(host)
    release = asyncio.Event()
    got: list[str] = []

    async def slow(record: dict[str, Any]) -> None:
        got.append(record["body"])
        await release.wait()

    host.serve("slow::fn", slow)
    host.bind("log", "slow::fn", {})
    records = [{"severity_number": 9, "body": str(n)} for n in range(10)]
    triggers.on_records("logs", records, None)  # returns at once: ingestion never waits for a handler
    assert counter(triggers, "observability_trigger_deliveries_total", trigger_type="log", outcome="dropped") == 7
    release.set()
    await triggers.deliveries.settle()
    assert got == ["0", "1", "2"]
    assert counter(triggers, "observability_trigger_deliveries_total", trigger_type="log", outcome="delivered") == 3
    await triggers.close()


async def test_a_failing_handler_is_counted_and_the_next_records_still_delivered() -> None:
    host = LocalHost()
    triggers = ObservabilityTriggers(host)
    triggers.register(host)
    got: list[str] = []

    def handler(record: dict[str, Any]) -> None:
        got.append(record["body"])
        if record["body"] == "bad":
            raise RuntimeError("handler broke")

    host.serve("f", handler)
    host.bind("log", "f", {"level": "info"})
    triggers.on_records("logs", [{"severity_number": 9, "body": b} for b in ("bad", "good")], None)
    await triggers.deliveries.settle()
    assert got == ["bad", "good"]
    assert counter(triggers, "observability_trigger_deliveries_total", trigger_type="log", outcome="failed") == 1
    await triggers.close()


async def test_a_trace_binding_gets_one_coalesced_tick_with_the_distinct_matching_trace_ids(
    start_observability: StartObservability,
) -> None:
    module, host = await start_observability()
    every, errors, billing = inbox(host, "views::all"), inbox(host, "views::errors"), inbox(host, "views::billing")
    host.bind("trace", "views::all", {})
    host.bind("trace", "views::errors", {"status": "ERROR"})
    host.bind("trace", "views::billing", {"service_name": "Billing"})
    assert host.telemetry is not None
    failed = span("execute pay", "00000000000000a1", trace=THIRD_TRACE)
    failed["status"] = {"code": 2}
    host.telemetry.receive(spans_message(span("execute a", "00000000000000a2"), span("execute b", "00000000000000a3")))
    host.telemetry.receive(spans_message(span("execute c", "00000000000000a4", trace=OTHER_TRACE)))
    host.telemetry.receive(spans_message(failed, service="billing"))

    tick = await next_of(every)
    assert tick == {"trace_ids": sorted({"0af7651916cd43dd8448eb211c80319c", OTHER_TRACE, THIRD_TRACE})}
    assert await next_of(errors) == {"trace_ids": [THIRD_TRACE]}
    assert await next_of(billing) == {"trace_ids": [THIRD_TRACE]}
    assert module.triggers is not None
    await module.triggers.deliveries.settle()
    assert every.empty() and errors.empty() and billing.empty(), "one tick per window"
    assert module.triggers.trace.ticks == 1

    host.telemetry.receive(spans_message(span("execute d", "00000000000000a5", trace=OTHER_TRACE)))
    assert await next_of(every) == {"trace_ids": [OTHER_TRACE]}, "a later window ticks again"
    await module.triggers.deliveries.settle()
    assert errors.empty() and billing.empty()


async def test_engine_spans_internal_spans_and_the_triggers_own_deliveries_do_not_tick(
    start_observability: StartObservability,
) -> None:
    module, host = await start_observability()
    assert module.triggers is not None
    ticks = inbox(host, "views::all")
    host.bind("trace", "views::all", {})
    delivery_trace = module.triggers.log._traces.traceparent().split("-")[1]
    module.keep(
        "spans",
        [
            _record("call orders::create", "iii", OTHER_TRACE),
            _record("queue poll", "orders-worker", OTHER_TRACE, attributes=[("iii.function.kind", "internal")]),
            _record("execute views::all", "views-worker", THIRD_TRACE),
            _record("execute helper", "views-worker", delivery_trace),
            _record("call engine::functions::list", "orders-worker", OTHER_TRACE, [("function_id", "engine::x")]),
        ],
    )
    assert host.telemetry is not None
    assert module.triggers.trace._flush is None, "no window opened for spans that do not count"
    assert counter(module, "observability_trigger_loop_skipped_total", trigger_type="trace") == 2
    host.telemetry.receive(spans_message(span("execute real", "00000000000000b2")))
    assert await next_of(ticks) == {"trace_ids": ["0af7651916cd43dd8448eb211c80319c"]}


async def test_a_tick_waiting_behind_a_slow_handler_is_joined_not_queued() -> None:
    host = LocalHost()
    triggers = ObservabilityTriggers(host, window_s=60.0)  # the test ends each window itself
    triggers.register(host)
    release = asyncio.Event()
    got: list[list[str]] = []
    first_in = asyncio.Event()

    async def slow(payload: dict[str, Any]) -> None:
        got.append(payload["trace_ids"])
        first_in.set()
        await release.wait()

    host.serve("views::slow", slow)
    host.bind("trace", "views::slow", {})
    triggers.on_records("spans", [_record("execute a", "w", "a" * 32)], None)
    triggers.trace._tick()
    await asyncio.wait_for(first_in.wait(), WAIT_S)
    for trace_id in ("b" * 32, "c" * 32):
        triggers.on_records("spans", [_record("execute b", "w", trace_id)], None)
        triggers.trace._tick()
    release.set()
    await triggers.deliveries.settle()
    assert got == [["a" * 32], ["b" * 32, "c" * 32]]
    await triggers.close()


def _record(name: str, service: str, trace_id: str, attributes: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "span_id": "00000000000000c1",
        "parent_span_id": None,
        "name": name,
        "start_time_unix_nano": 1,
        "end_time_unix_nano": 2,
        "status": "unset",
        "attributes": attributes or [],
        "service_name": service,
    }
