"""The engine's own spans (iii.engine.spans), on the wire: an in-process engine with its default modules (the
observability module keeps the spans), raw protocol workers that send and receive ``traceparent`` as an SDK
does, and the spans read back with ``engine::traces::list``.

Each test checks the chain a trace must show: the caller's span (named by the ``traceparent`` the caller sent),
the engine's span (its child), and the callee's (the ``traceparent`` the callee got names the engine's span).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import websockets

from iii.engine import Engine
from iii.modules.http import HttpModule
from iii.protocol.refs import channel_url
from iii.protocol.trace_context import parse_traceparent
from tests.engine.wire import RawWorker

StartEngine = Callable[..., Awaitable[Engine]]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


async def all_spans(worker: RawWorker, trace_id: str) -> list[dict[str, Any]]:
    """Every span the engine keeps of ``trace_id``."""
    query = {"trace_id": trace_id, "search_all_spans": True, "include_internal": True}
    listed: list[dict[str, Any]] = (await worker.result_of("engine::traces::list", query))["spans"]
    return listed


async def spans_of(worker: RawWorker, trace_id: str) -> dict[str, dict[str, Any]]:
    """Every span the engine keeps of ``trace_id``, by name (of those with the same name, the last started)."""
    return {span["name"]: span for span in await all_spans(worker, trace_id)}


def named_by(traceparent: str) -> tuple[str, str]:
    """The (trace id, span id) a ``traceparent`` names."""
    parsed = parse_traceparent(traceparent)
    assert parsed is not None, traceparent
    return parsed[0], parsed[1]


def attributes(span: dict[str, Any]) -> dict[str, str]:
    return dict(span["attributes"])


async def test_a_call_between_workers_is_caller_span_then_engine_span_then_callee(live_engine: Engine) -> None:
    """Proves the engine's ``call <fn>`` span sits between the caller's span and the callee: a child of the
    caller's ``traceparent``, named by the ``traceparent`` the callee gets, with the reference's attributes;
    baggage passes unchanged."""
    host = await RawWorker.connect(live_engine.url)
    caller = await RawWorker.connect(live_engine.url)
    await host.register("math::double")

    await caller.invoke("math::double", {"n": 21}, traceparent=TRACEPARENT, baggage="user=7,tier=gold")
    delivery = await host.serve_one(lambda d: {"n": d["data"]["n"] * 2})
    answer = await caller.recv_type("invocationresult")
    assert answer["result"] == {"n": 42}

    trace_id, engine_span_id = named_by(delivery["traceparent"])
    assert trace_id == TRACE_ID and engine_span_id != CALLER_SPAN
    assert delivery["baggage"] == "user=7,tier=gold"
    span = (await spans_of(caller, TRACE_ID))["call math::double"]
    assert span["span_id"] == engine_span_id and span["parent_span_id"] == CALLER_SPAN
    assert span["service_name"] == "iii" and span["status"] == "ok"
    assert 0 < span["start_time_unix_nano"] <= span["end_time_unix_nano"]
    assert attributes(span) == {
        "faas.invoked_name": "math::double",
        "faas.trigger": "other",
        "function_id": "math::double",
        "iii.function.kind": "user",
        "iii.worker.id": host.worker_id,
        "iii.caller.worker_id": caller.worker_id,
    }


async def test_a_call_outside_a_sampled_trace_gets_no_engine_span(live_engine: Engine) -> None:
    """Proves the engine joins traces and does not start them for calls: a call with no ``traceparent``, one
    that is not one, or one whose trace is not sampled reaches the callee with the context as it was sent and
    leaves no span (so a client that traces nothing pays nothing for the engine's spans)."""
    host = await RawWorker.connect(live_engine.url)
    caller = await RawWorker.connect(live_engine.url)
    await host.register("svc::plain")
    unsampled = f"00-{TRACE_ID}-{CALLER_SPAN}-00"
    for sent in (None, "00-abc-def-01", unsampled):
        extra = {} if sent is None else {"traceparent": sent}
        await caller.invoke("svc::plain", {}, **extra)
        delivery = await host.serve_one(lambda d: "ok")
        await caller.recv_type("invocationresult")
        assert delivery.get("traceparent") == sent
    listed = await caller.result_of("engine::traces::list", {"search_all_spans": True, "include_internal": True})
    assert [span["name"] for span in listed["spans"]] == []


async def test_a_failed_call_has_an_error_span(live_engine: Engine) -> None:
    """Proves a call the callee answers with an error, and one whose callee leaves, end their span with status
    error and the error's code and message, as the reference records a failure."""
    host = await RawWorker.connect(live_engine.url)
    caller = await RawWorker.connect(live_engine.url)
    await host.register("svc::fails")
    await caller.invoke("svc::fails", {}, traceparent=TRACEPARENT)
    delivery = await host.recv_type("invokefunction")
    error = {"code": "bad_input", "message": "n must be even"}
    await host.send(
        {
            "type": "invocationresult",
            "invocation_id": delivery["invocation_id"],
            "function_id": "svc::fails",
            "error": error,
        }
    )
    await caller.recv_type("invocationresult")
    span = (await spans_of(caller, TRACE_ID))["call svc::fails"]
    assert span["status"] == "error" and span["status_description"] == "n must be even"
    assert attributes(span)["error.type"] == "bad_input"
    assert [event["name"] for event in span["events"]] == ["exception"]

    other_trace = "5" * 32
    await caller.invoke("svc::fails", {}, traceparent=f"00-{other_trace}-{CALLER_SPAN}-01")
    await host.recv_type("invokefunction")
    await host.close()  # the host leaves with the call unanswered
    answer = await caller.recv_type("invocationresult")
    assert answer["error"]["code"] == "invocation_stopped"
    span = (await spans_of(caller, other_trace))["call svc::fails"]
    assert span["status"] == "error" and attributes(span)["error.type"] == "invocation_stopped"


async def test_calls_of_functions_inside_the_engine_are_traced_only_in_a_trace(live_engine: Engine) -> None:
    """Proves the reference's rule for functions served inside the engine: a call with trace context gets an
    internal ``call <fn>`` span (hidden from the default listing), one without gets none (the engine's machinery
    and the console's polling start no traces), and the observability functions are never traced."""
    caller = await RawWorker.connect(live_engine.url)
    await caller.call("engine::functions::list", {}, traceparent=TRACEPARENT)
    await caller.call("engine::workers::list", {})
    await caller.call("engine::logs::list", {}, traceparent=TRACEPARENT)
    spans = await spans_of(caller, TRACE_ID)
    assert list(spans) == ["call engine::functions::list"]
    span = spans["call engine::functions::list"]
    assert span["parent_span_id"] == CALLER_SPAN and attributes(span)["iii.function.kind"] == "internal"
    everything = await caller.result_of("engine::traces::list", {"search_all_spans": True, "include_internal": True})
    assert {s["name"] for s in everything["spans"]} == {"call engine::functions::list"}
    assert (await caller.result_of("engine::traces::list", {}))["spans"] == []  # internal: hidden by default


async def test_an_enqueued_call_is_traced_from_the_enqueue_to_the_delivery(live_engine: Engine) -> None:
    """Proves the queue path shows whole: the enqueue span (a child of the enqueuer's), the queue's delivery span
    (a child of the enqueue's, however much later), the delivered call's span (a child of the delivery's), and the
    callee gets a traceparent naming the last; baggage passes unchanged."""
    host = await RawWorker.connect(live_engine.url)
    caller = await RawWorker.connect(live_engine.url)
    await host.register("jobs::work")
    answer = await caller.call(
        "jobs::work",
        {"job": 1},
        traceparent=TRACEPARENT,
        baggage="tenant=a",
        action={"type": "enqueue", "queue": "default"},
    )
    assert "messageReceiptId" in answer["result"], answer
    delivery = await host.serve_one(lambda d: "done")
    assert delivery["baggage"] == "tenant=a"
    spans = await _wait_for_spans(caller, TRACE_ID, {"enqueue jobs::work \u2192 default", "fn_queue default"})
    enqueue = spans["enqueue jobs::work \u2192 default"]
    queued = spans["fn_queue default"]
    call = spans["call jobs::work"]
    provider = spans["call engine::queue::enqueue"]
    assert enqueue["parent_span_id"] == CALLER_SPAN and enqueue["status"] == "ok"
    assert provider["parent_span_id"] == enqueue["span_id"]
    assert queued["parent_span_id"] == enqueue["span_id"]
    assert attributes(queued)["function_id"] == "jobs::work" and attributes(queued)["attempt"] == "1"
    assert call["parent_span_id"] == queued["span_id"]
    assert named_by(delivery["traceparent"]) == (TRACE_ID, call["span_id"])


async def _wait_for_spans(worker: RawWorker, trace_id: str, names: set[str]) -> dict[str, dict[str, Any]]:
    """The trace's spans once ``names`` are among them (spans that end after the callee answered, the queue's
    delivery span, are kept a moment after that answer)."""
    async with asyncio.timeout(10):
        while True:
            spans = await spans_of(worker, trace_id)
            if names <= spans.keys():
                return spans


async def test_an_http_exchange_is_a_span_and_the_routed_call_its_child(live_engine: Engine) -> None:
    """Proves an HTTP trigger's exchange gets the reference's ``<METHOD> <route>`` server span, a child of the
    request's ``traceparent`` header, ended with the response's status, and the call of the route's function is
    its child."""
    host = await RawWorker.connect(live_engine.url)
    await host.register("api::hello")
    config = {"api_path": "/hello/:name", "http_method": "GET"}
    await host.send(
        {"type": "registertrigger", "id": "t1", "trigger_type": "http", "function_id": "api::hello", "config": config}
    )
    await host.ping()
    http = live_engine.modules.http
    assert isinstance(http, HttpModule)
    url = f"http://127.0.0.1:{http.port}/hello/ada?x=1"
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.get(url, headers={"traceparent": TRACEPARENT, "baggage": "b=1"}))
        delivery = await host.serve_one(lambda d: {"status_code": 201, "body": {"hi": d["data"]["path_params"]}})
        async with await request as response:
            assert response.status == 201
    assert delivery["baggage"] == "b=1"
    spans = await _wait_for_spans(host, TRACE_ID, {"GET /hello/:name"})
    exchange, call = spans["GET /hello/:name"], spans["call api::hello"]
    assert exchange["parent_span_id"] == CALLER_SPAN and exchange["status"] == "ok"
    assert {
        key: attributes(exchange)[key]
        for key in ("http.request.method", "http.route", "url.path", "http.response.status_code", "iii.function.kind")
    } == {
        "http.request.method": "GET",
        "http.route": "/hello/:name",
        "url.path": "/hello/ada",
        "http.response.status_code": "201",
        "iii.function.kind": "user",
    }
    assert call["parent_span_id"] == exchange["span_id"]
    assert named_by(delivery["traceparent"]) == (TRACE_ID, call["span_id"])


async def test_a_channel_made_in_a_trace_has_a_lifetime_span(live_engine: Engine) -> None:
    """Proves a channel created by a call with trace context gets a span from its creation to its end, a child
    of the creating call's span, with what it relayed; a clean end is ok, a writer given up unused an error."""
    worker = await RawWorker.connect(live_engine.url)
    created = await worker.call("engine::channels::create", {}, traceparent=TRACEPARENT)
    writer_ref, reader_ref = created["result"]["writer"], created["result"]["reader"]
    async with (
        websockets.connect(_url(live_engine, writer_ref)) as writer,
        websockets.connect(_url(live_engine, reader_ref)) as reader,
    ):
        await writer.send(b"x" * 1000)
        await writer.close()
        assert await reader.recv() == b"x" * 1000
        await reader.wait_closed()
        assert reader.close_code == 1000
    released = await worker.call("engine::channels::create", {}, traceparent=TRACEPARENT)
    await worker.call("engine::channels::release", {"ends": [released["result"]["writer"]], "reason": "unused"})
    await worker.call("engine::channels::release", {"ends": [released["result"]["reader"]]})

    name = f"channel {writer_ref['channel_id']}"
    spans = await _wait_for_spans(worker, TRACE_ID, {name})
    creating = [s for s in await all_spans(worker, TRACE_ID) if s["name"] == "call engine::channels::create"]
    span = spans[name]
    assert span["parent_span_id"] in {s["span_id"] for s in creating}
    assert span["status"] == "ok"
    assert attributes(span)["iii.channel.bytes"] == "1000" and attributes(span)["iii.channel.close_code"] == "1000"
    unused = spans[f"channel {released['result']['writer']['channel_id']}"]
    assert unused["status"] == "error" and "unused" in unused["status_description"]


def _url(engine: Engine, ref: dict[str, Any]) -> str:
    return channel_url(engine.url, ref["channel_id"], ref["access_key"], ref["direction"])


async def test_with_no_module_receiving_telemetry_nothing_is_recorded(start_engine: StartEngine) -> None:
    """Proves the engine records no span without a module that receives telemetry (``--modules`` without
    observability): it makes no span recorder at all, and the callee gets the caller's ``traceparent`` as sent."""
    engine = await start_engine(modules="queue")
    assert engine.core.spans is None
    host = await RawWorker.connect(engine.url)
    caller = await RawWorker.connect(engine.url)
    await host.register("math::double")
    await caller.invoke("math::double", {"n": 1}, traceparent=TRACEPARENT, baggage="k=v")
    delivery = await host.serve_one(lambda d: 2)
    await caller.recv_type("invocationresult")
    assert (delivery["traceparent"], delivery["baggage"]) == (TRACEPARENT, "k=v")
    assert engine.core.spans is None and engine.core.calls.spans is None


def test_only_a_w3c_traceparent_names_a_parent() -> None:
    """Proves what the engine takes as its spans' parent: a W3C ``traceparent``, lower-case hex, not all zeros,
    version 00 exactly as long as it is, a later version possibly longer; anything else starts a new trace."""
    span = "00f067aa0ba902b7"
    assert parse_traceparent(TRACEPARENT) == (TRACE_ID, span, "01")
    assert parse_traceparent(f"01-{TRACE_ID}-{span}-00-more") == (TRACE_ID, span, "00")
    refused = [
        None,
        "",
        "00-abc-def-01",
        TRACEPARENT.upper(),
        f"ff-{TRACE_ID}-{span}-01",
        f"00-{'0' * 32}-{span}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"{TRACEPARENT}-more",
        f"01-{TRACE_ID}-{span}-01more",
    ]
    assert [parse_traceparent(value) for value in refused] == [None] * len(refused)
