"""Our SDK's own telemetry: the span of every function execution and the handlers' log records reach the engine
(``engine::traces::list``, ``engine::logs::list``), the calls a handler makes continue its trace, the opt-out
sends nothing, and an engine that does not take the telemetry never holds a call up.

A real engine in a child process; a bare protocol client (``RawWorker``) where the test must choose the
``traceparent`` and ``baggage`` a call carries, or see what a call made by our handler carries.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from iii import III, FunctionError, InitOptions, Logger, current_invocation, register_worker
from iii.sdk.telemetry import connection, exporter
from iii.testing import EngineProcess
from tests.engine.wire import RawWorker

ARRIVAL_TIMEOUT_S = 10.0
app_log = logging.getLogger("tests.telemetry")


@pytest.fixture
def caller(engine: EngineProcess) -> Iterator[III]:
    """A client that only asks (no telemetry of its own)."""
    client = register_worker(engine.url, InitOptions(otel={"enabled": False}))
    try:
        yield client
    finally:
        client.shutdown()


def listed(client: III, function_id: str, payload: dict[str, Any], key: str, count: int = 1) -> list[dict[str, Any]]:
    """The rows of ``function_id``'s answer, asked again until there are at least ``count``."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while True:
        rows: list[dict[str, Any]] = client.trigger({"function_id": function_id, "payload": payload})[key]
        if len(rows) >= count:
            return rows
        assert time.monotonic() < deadline, f"{function_id} {payload}: {rows}"


def spans_named(client: III, name: str, count: int = 1) -> list[dict[str, Any]]:
    return listed(client, "engine::traces::list", {"name": name, "search_all_spans": True}, "spans", count)


def under(spans: list[dict[str, Any]], child: dict[str, Any], parent_span_id: str) -> bool:
    """Whether ``child``'s parent is ``parent_span_id``, or a span that is no function execution (the engine's)
    whose parent is, and so on up."""
    by_id = {span["span_id"]: span for span in spans}
    current = child["parent_span_id"]
    while current != parent_span_id:
        parent = by_id.get(current)
        if parent is None or parent["name"].startswith("execute "):
            return False
        current = parent["parent_span_id"]
    return True


def test_each_execution_is_a_span_and_handler_logs_carry_its_ids(engine: EngineProcess, caller: III) -> None:
    """Proves the spans (names, trace, parent/child, status, service name) and the correlated log records of a
    call through two functions of our worker, one of which fails, are listed by the engine."""
    tag = uuid.uuid4().hex[:8]
    worker = register_worker(engine.url, InitOptions(worker_name=f"tel-{tag}"))
    try:

        def inner(data: Any) -> Any:
            app_log.warning("inner got %s", data)
            if data == "boom":
                raise FunctionError("bad_input", "no booms here")
            return data

        async def outer(data: Any) -> Any:
            Logger(service_name="tel").info("outer starts", {"n": data})
            try:
                return await worker.trigger_async({"function_id": f"t.inner.{tag}", "payload": data})
            except Exception as exc:
                return str(exc)

        assert worker.register_function(f"t.inner.{tag}", inner).wait_active(10)
        assert worker.register_function(f"t.outer.{tag}", outer).wait_active(10)
        assert caller.trigger({"function_id": f"t.outer.{tag}", "payload": 3}) == 3

        (outer_span,) = spans_named(caller, f"execute t.outer.{tag}")
        trace = listed(
            caller, "engine::traces::list", {"trace_id": outer_span["trace_id"], "search_all_spans": True}, "spans", 2
        )
        (inner_span,) = [span for span in trace if span["name"] == f"execute t.inner.{tag}"]
        assert under(trace, outer_span, None) if outer_span["parent_span_id"] else True, trace
        assert under(trace, inner_span, outer_span["span_id"]), trace
        assert outer_span["status"] == inner_span["status"] == "ok", trace
        assert outer_span["service_name"] == inner_span["service_name"] == f"tel-{tag}", trace
        assert inner_span["start_time_unix_nano"] >= outer_span["start_time_unix_nano"] > 0, trace
        assert outer_span["end_time_unix_nano"] >= inner_span["end_time_unix_nano"], trace

        logs = listed(caller, "engine::logs::list", {"trace_id": outer_span["trace_id"]}, "logs", 2)
        by_body = {row["body"]: row for row in logs}
        assert by_body["inner got 3"]["span_id"] == inner_span["span_id"], logs
        assert by_body["inner got 3"]["severity_text"] == "WARN", logs
        assert by_body["inner got 3"]["attributes"]["logger.name"] == "tests.telemetry", logs
        assert by_body["outer starts"]["span_id"] == outer_span["span_id"], logs
        assert by_body["outer starts"]["attributes"]["log.data"] == {"n": 3}, logs
        assert by_body["outer starts"]["severity_text"] == "INFO", logs

        assert "no booms here" in caller.trigger({"function_id": f"t.outer.{tag}", "payload": "boom"})
        failed = next(
            span
            for span in spans_named(caller, f"execute t.inner.{tag}", 2)
            if span["trace_id"] != outer_span["trace_id"]
        )
        assert failed["status"] == "error" and failed["status_description"] == "no booms here", failed
        assert [event["name"] for event in failed["events"]] == ["exception"], failed
    finally:
        worker.shutdown()


async def test_the_calls_a_handler_makes_continue_its_trace_and_pass_the_baggage_on(engine: EngineProcess) -> None:
    """Proves the span is the child of the call's ``traceparent``, the handler's own calls name that span as their
    parent (same trace) and carry the baggage unchanged, and the baggage entries are the span's attributes."""
    tag = uuid.uuid4().hex[:8]
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    worker = register_worker(engine.url, InitOptions(worker_name=f"tp-{tag}"))
    sink = await RawWorker.connect(engine.url)
    source = await RawWorker.connect(engine.url)
    try:
        await sink.register(f"tp.sink.{tag}")

        async def relay(data: Any) -> Any:
            return await worker.trigger_async({"function_id": f"tp.sink.{tag}", "payload": data})

        assert await asyncio.to_thread(worker.register_function(f"tp.relay.{tag}", relay).wait_active, 10)
        answer = asyncio.ensure_future(
            source.call(
                f"tp.relay.{tag}", 1, traceparent=f"00-{trace_id}-{parent_id}-01", baggage="tenant=acme,note=a%20b"
            )
        )
        delivered = await sink.serve_one(lambda delivery: "done")
        assert (await answer).get("result") == "done"

        version, sent_trace, sent_parent, flags = delivered["traceparent"].split("-")
        assert (version, sent_trace, flags) == ("00", trace_id, "01"), delivered
        assert sent_parent != parent_id, delivered
        assert delivered["baggage"] == "tenant=acme,note=a%20b", delivered

        trace = await trace_of(engine, f"execute tp.relay.{tag}")
        (ours,) = [span for span in trace if span["name"] == f"execute tp.relay.{tag}"]
        assert under(trace, ours, parent_id), trace
        assert sent_parent == ours["span_id"] or under(trace, {"parent_span_id": sent_parent}, ours["span_id"])
        assert ["tenant", "acme"] in ours["attributes"] and ["note", "a b"] in ours["attributes"], ours
    finally:
        await sink.close()
        await source.close()
        await asyncio.to_thread(worker.shutdown)


async def trace_of(engine: EngineProcess, name: str) -> list[dict[str, Any]]:
    """The spans of the trace of the first span named ``name`` (asked again until there is one), over a bare
    connection (the test's loop must not block on a sync client)."""
    raw = await RawWorker.connect(engine.url)
    try:
        deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
        while True:
            found = await raw.result_of("engine::traces::list", {"name": name, "search_all_spans": True})
            if found["spans"]:
                trace_id = found["spans"][0]["trace_id"]
                whole = await raw.result_of("engine::traces::list", {"trace_id": trace_id, "search_all_spans": True})
                spans: list[dict[str, Any]] = whole["spans"]
                return spans
            assert time.monotonic() < deadline, f"no span {name}"
    finally:
        await raw.close()


async def test_an_unsampled_call_records_no_span_and_passes_its_traceparent_on(engine: EngineProcess) -> None:
    """Proves a ``traceparent`` whose sampled flag is off is honoured: our worker records nothing for it, and its
    calls still carry the caller's trace."""
    tag = uuid.uuid4().hex[:8]
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    worker = register_worker(engine.url)
    sink = await RawWorker.connect(engine.url)
    source = await RawWorker.connect(engine.url)
    try:
        await sink.register(f"ns.sink.{tag}")

        async def relay(data: Any) -> Any:
            return await worker.trigger_async({"function_id": f"ns.sink.{tag}", "payload": data})

        assert await asyncio.to_thread(worker.register_function(f"ns.relay.{tag}", relay).wait_active, 10)
        answer = asyncio.ensure_future(source.call(f"ns.relay.{tag}", 1, traceparent=f"00-{trace_id}-{parent_id}-00"))
        delivered = await sink.serve_one(lambda delivery: "done")
        assert (await answer).get("result") == "done"
        assert delivered["traceparent"].split("-")[1] == trace_id, delivered
        assert worker.telemetry is not None
        assert worker.telemetry.sent + len(worker.telemetry._spans) == 0  # no span was even queued
    finally:
        await sink.close()
        await source.close()
        await asyncio.to_thread(worker.shutdown)


def test_opting_out_sends_nothing(engine: EngineProcess, caller: III, monkeypatch: pytest.MonkeyPatch) -> None:
    """Proves ``otel={"enabled": False}`` and ``OTEL_ENABLED=false`` each turn the telemetry off: no span and no log
    record of theirs reaches the engine, while a worker with telemetry on, run after them, is listed."""
    tag = uuid.uuid4().hex[:8]
    by_option = register_worker(engine.url, InitOptions(worker_name=f"off-option-{tag}", otel={"enabled": False}))
    monkeypatch.setenv("OTEL_ENABLED", "false")
    by_env = register_worker(engine.url, InitOptions(worker_name=f"off-env-{tag}"))
    monkeypatch.delenv("OTEL_ENABLED")
    for name, worker in (("option", by_option), ("env", by_env)):
        assert worker.telemetry is None

        def handler(data: Any, name: str = name) -> Any:
            app_log.warning("quiet %s %s", name, tag)
            Logger().info(f"quiet logger {name} {tag}")
            return data

        assert worker.register_function(f"off.{name}.{tag}", handler).wait_active(10)
        assert caller.trigger({"function_id": f"off.{name}.{tag}", "payload": 1}) == 1
        worker.shutdown()  # whatever it would send is sent by now

    marker = register_worker(engine.url, InitOptions(worker_name=f"on-{tag}"))
    try:
        marker.register_function(f"on.{tag}", lambda data: app_log.warning("loud %s", tag)).wait_active(10)
        caller.trigger({"function_id": f"on.{tag}", "payload": 1})
        spans_named(caller, f"execute on.{tag}")
        listed(caller, "engine::logs::list", {"service_name": f"on-{tag}"}, "logs")
    finally:
        marker.shutdown()
    everything = caller.trigger({"function_id": "engine::traces::list", "payload": {"search_all_spans": True}})
    assert not [span for span in everything["spans"] if span["name"].startswith("execute off.")]
    logs = caller.trigger({"function_id": "engine::logs::list", "payload": {}})["logs"]
    assert not [row for row in logs if "quiet" in row["body"]], logs


def test_a_telemetry_socket_that_hangs_never_holds_a_call_up_and_what_does_not_fit_is_counted(
    engine: EngineProcess, caller: III, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proves the bound and the independence from the network: with the telemetry socket stuck in its handshake
    (a listener that never accepts), calls are answered at their usual pace, the queue keeps at most its bound
    and every span beyond it is counted as dropped."""
    monkeypatch.setattr(exporter, "MAX_QUEUED", 5)
    stuck = socket.socket()
    stuck.bind(("127.0.0.1", 0))
    stuck.listen(100)
    worker = register_worker(engine.url)
    try:
        assert worker.telemetry is not None
        port = stuck.getsockname()[1]
        monkeypatch.setattr(worker.telemetry._connection, "_address", lambda: f"ws://127.0.0.1:{port}")
        worker.register_function("stuck.echo", lambda data: data).wait_active(10)
        started = time.monotonic()
        for n in range(8):
            assert caller.trigger({"function_id": "stuck.echo", "payload": n}) == n
        assert time.monotonic() - started < connection.CONNECT_TIMEOUT_S / 2
        assert worker.telemetry.dropped == 3
        assert len(worker.telemetry._spans) == 5
    finally:
        worker.shutdown()
        stuck.close()


def test_logs_outside_a_handler_are_sent_without_trace_ids_and_the_sdks_own_are_not(
    engine: EngineProcess, caller: III
) -> None:
    """Proves a program's log lines outside any handler reach the engine too (no trace), and the SDK's own
    (``iii.*``) stay out."""
    tag = uuid.uuid4().hex[:8]
    worker = register_worker(engine.url, InitOptions(worker_name=f"plain-{tag}"))
    try:
        assert current_invocation() is None
        app_log.error("starting %s", tag)
        logging.getLogger("iii.sdk").error("sdk line %s", tag)
        (row,) = listed(caller, "engine::logs::list", {"service_name": f"plain-{tag}"}, "logs")
        assert row["body"] == f"starting {tag}" and row["trace_id"] is None and row["severity_text"] == "ERROR"
    finally:
        worker.shutdown()
