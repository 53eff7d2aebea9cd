"""Links between engines (issue 15's transport): engine A calls, over a worker connection to engine B, the
functions B's workers serve; losing the link fails what was in flight on it at once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import websockets

from iii.engine import Engine
from iii.engine.links import LINK_NAME, EngineLink
from tests.engine.wire import RawWorker, eventually

StartEngine = Callable[..., Awaitable[Engine]]


def url(engine: Engine) -> str:
    return f"ws://127.0.0.1:{engine.port}"


async def linked(start_engine: StartEngine, **link_options: Any) -> tuple[Engine, Engine, EngineLink, RawWorker]:
    """Engines A and B, a link from A to B, and a worker of B serving ``svc::echo`` (routed from A)."""
    a, b = await start_engine(), await start_engine()
    server = await RawWorker.connect(url(b))
    await server.register("svc::echo")
    link = EngineLink(a.core, url(b), **link_options)
    await link.open()
    assert a.core.add_remote_function("svc::echo", link)
    return a, b, link, server


async def test_a_call_through_a_link_is_served_by_the_other_engines_worker(start_engine: StartEngine) -> None:
    a, _b, link, server = await linked(start_engine)
    caller = await RawWorker.connect(url(a))
    invocation_id = await caller.invoke("svc::echo", {"n": 1})
    delivery = await server.serve_one(lambda d: {"echo": d["data"]["n"]})
    answer = await caller.recv_type("invocationresult")
    assert answer["invocation_id"] == invocation_id and answer["result"] == {"echo": 1}
    assert delivery["function_id"] == "svc::echo"
    workers = await server.result_of("engine::workers::list", {})
    assert LINK_NAME in [w["name"] for w in workers["workers"]]  # to B, the link is a worker
    errors = await caller.call("svc::echo", {"n": 2}, timeout_ms=1)  # a deadline of A's own still applies
    await server.recv_type("invokefunction")
    assert errors["error"]["code"] == "TIMEOUT"
    link.close()


async def test_losing_the_link_fails_the_calls_in_flight_at_once_and_its_functions_go(
    start_engine: StartEngine,
) -> None:
    a, b, _link, server = await linked(start_engine)
    caller = await RawWorker.connect(url(a))
    await caller.invoke("svc::echo", {"slow": True})
    await server.recv_type("invokefunction")  # B's worker holds the call
    await b.stop()
    async with asyncio.timeout(1):
        answer = await caller.recv_type("invocationresult")
    assert answer["error"]["code"] == "invocation_stopped"
    again = await caller.call("svc::echo", {"n": 3})
    assert again["error"]["code"] == "function_not_found"


async def test_a_silent_engine_is_dropped_after_the_ping_timeout(start_engine: StartEngine) -> None:
    """An engine that accepts the link and then says nothing more (hung, or its host gone without a reset)."""
    a = await start_engine()
    accepted = asyncio.Event()

    async def silent(ws: Any) -> None:
        await ws.send(json.dumps({"type": "workerregistered", "worker_id": "w", "reattach_token": "t"}))
        accepted.set()
        await ws.wait_closed()  # says nothing more, answers no ping of the protocol

    async with websockets.serve(silent, "127.0.0.1", 0, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        link = EngineLink(a.core, f"ws://127.0.0.1:{port}", ping_interval_s=0.05, ping_timeout_s=0.2)
        await link.open()
        assert a.core.add_remote_function("svc::hung", link)
        caller = await RawWorker.connect(url(a))
        await caller.invoke("svc::hung", {})
        async with asyncio.timeout(2):
            answer = await caller.recv_type("invocationresult")
        assert answer["error"]["code"] == "invocation_stopped"
        assert a.core.functions.get("svc::hung") is None


async def test_a_link_serves_what_the_cluster_says_and_the_local_worker_stands_by(start_engine: StartEngine) -> None:
    """The cluster's registry decides: a link given an id a local worker serves takes it, the worker stands by
    and serves again when the link goes; an id served inside the engine is never given to a link."""
    a, _b, link, _server = await linked(start_engine)
    local = await RawWorker.connect(url(a))
    await local.register("svc::local")
    assert a.core.add_remote_function("svc::local", link)
    entry = a.core.functions.get("svc::local")
    assert entry is not None and entry.owner is link
    assert not a.core.add_remote_function("engine::functions::list", link)
    link.close()
    await eventually(lambda: (e := a.core.functions.get("svc::local")) is not None and e.owner is not link, 5, "back")
