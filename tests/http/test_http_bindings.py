"""The http trigger type on the wire: bindings accepted, refused and removed; limits and timeouts.

Workers here are raw WebSocket clients, so each test controls exactly when a function answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from iii.engine import Engine
from tests.engine.wire import RawWorker, eventually

TIMEOUT = aiohttp.ClientTimeout(total=30)


def http_binding(binding_id: str, function_id: str, config: Any) -> dict[str, Any]:
    return {
        "type": "registertrigger",
        "id": binding_id,
        "trigger_type": "http",
        "function_id": function_id,
        "config": config,
    }


async def serving(engine: Engine, function_id: str, api_path: str, method: str = "GET") -> RawWorker:
    worker = await RawWorker.connect(engine.url)
    await worker.register(function_id)
    await worker.send(http_binding(f"b-{function_id}", function_id, {"api_path": api_path, "http_method": method}))
    await worker.ping()  # bindings are handled in order: after the pong the route serves
    return worker


def base(engine: Engine) -> str:
    assert engine.http is not None
    return engine.http.url


async def get(url: str, method: str = "GET", **options: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http, http.request(method, url, **options) as response:
        body = await response.json() if response.content_type == "application/json" else await response.read()
        return response.status, body


async def test_the_function_receives_the_reference_payload(live_engine: Engine) -> None:
    worker = await serving(live_engine, "users.get", "/users/:id")
    asking = asyncio.ensure_future(get(f"{base(live_engine)}/users/7?q=x", headers={"X-A": "1"}))
    delivery = await worker.serve_one(lambda delivery: {"status_code": 200, "body": "ok"})
    data = delivery["data"]
    assert (data["path"], data["method"], data["path_params"], data["query_params"]) == (
        "/users/:id",
        "GET",
        {"id": "7"},
        {"q": "x"},
    )
    assert data["headers"]["x-a"] == "1" and data["body"] is None
    assert data["trigger"] == {"type": "http", "path": "/users/:id", "method": "GET"}
    assert data["request_body"]["direction"] == "read" and data["response"]["direction"] == "write"
    assert data["request_body"]["channel_id"] != data["response"]["channel_id"]
    assert await asking == (200, "ok")


async def test_a_worker_cannot_provide_the_builtin_type(live_engine: Engine) -> None:
    worker = await RawWorker.connect(live_engine.url)
    await worker.send({"type": "registertriggertype", "id": "http", "description": "mine"})
    notice = await worker.recv_type("error")
    assert "built into the engine" in notice["error"]["message"]
    listing = await worker.result_of("engine::triggers::list", {})
    (http,) = [t for t in listing["triggers"] if t["id"] == "http"]
    assert http["worker_name"] == "http" and http["description"]  # the module that provides it


async def test_bad_configs_and_conflicting_routes_are_refused_with_a_reason(live_engine: Engine) -> None:
    worker = await serving(live_engine, "files.get", "/files/:name")
    other = await RawWorker.connect(live_engine.url)
    for binding_id, config, expected in [
        ("no-path", {"http_method": "GET"}, "api_path"),
        ("bad-method", {"api_path": "/x", "http_method": "BREW"}, "http_method"),
        ("not-object", "/x", "config"),
        ("taken", {"api_path": "/files/:name", "http_method": "GET"}, "already bound to files.get"),
        ("renamed", {"api_path": "/files/:other"}, "conflicts with already-registered route 'GET /files/:name'"),
    ]:
        await other.send(http_binding(binding_id, "f", config))
        refusal = await other.recv_type("triggerregistrationresult")
        assert refusal["id"] == binding_id
        assert refusal["error"]["code"] == "trigger_registration_failed"
        assert expected in refusal["error"]["message"]
    listing = await other.result_of("engine::registered-triggers::list", {"trigger_type": "http"})
    mine = {t["id"]: t["status"] for t in listing["registered_triggers"] if t["function_id"] == "f"}
    assert mine == dict.fromkeys(["no-path", "bad-method", "not-object", "taken", "renamed"], "refused")
    await worker.close()


async def test_a_route_goes_when_it_is_unbound_or_its_worker_leaves(live_engine: Engine) -> None:
    first = await serving(live_engine, "a.get", "/a")
    second = await serving(live_engine, "b.get", "/b")
    await first.send({"type": "unregistertrigger", "id": "b-a.get"})
    await first.ping()
    status, body = await get(f"{base(live_engine)}/a")
    assert (status, body["error"]["code"]) == (404, "NOT_FOUND")
    await second.close()
    http = live_engine.http
    assert http is not None
    await eventually(lambda: http.routes.match("GET", "/b") is None, what="the route of a departed worker removed")
    assert (await get(f"{base(live_engine)}/b"))[0] == 404


async def test_a_function_that_never_answers_gets_a_504(start_engine: Callable[..., Awaitable[Engine]]) -> None:
    engine = await start_engine(http_timeout_s=0.3)
    worker = await serving(engine, "slow.get", "/slow")
    status, body = await get(f"{base(engine)}/slow")
    assert (status, body["error"]["code"]) == (504, "TIMEOUT")
    assert (await worker.recv_type("invokefunction"))["function_id"] == "slow.get"  # it was called


async def test_a_worker_that_dies_mid_call_gives_a_502(live_engine: Engine) -> None:
    worker = await serving(live_engine, "dying.get", "/dying")
    asking = asyncio.ensure_future(get(f"{base(live_engine)}/dying"))
    await worker.recv_type("invokefunction")
    await worker.close()
    status, body = await asking
    assert (status, body["error"]["code"]) == (502, "invocation_stopped")


async def test_a_broken_response_stream_is_the_answer_only_once_the_call_has_ended(live_engine: Engine) -> None:
    """The function's SDK releases the response writer it left unused when its invocation ends; that news may come
    before the result (in a worker, on another socket), so it is a 502 only if the call ends without an answer."""
    worker = await serving(live_engine, "late.get", "/late")
    for result, expected in [({"status_code": 200, "body": "value"}, (200, "value")), (None, None)]:
        asking = asyncio.ensure_future(get(f"{base(live_engine)}/late"))
        delivery = await worker.recv_type("invokefunction")
        released = await worker.call("engine::channels::release", {"ends": [delivery["data"]["response"]]})
        assert not released.get("error")
        await worker.ping()
        assert not asking.done()  # still waiting for the call
        reply = {"type": "invocationresult", "invocation_id": delivery["invocation_id"], "function_id": "late.get"}
        await worker.send({**reply, "result": result} if result is not None else reply)
        status, body = await asking
        if expected is not None:
            assert (status, body) == expected
        else:
            assert (status, body["error"]["code"]) == (502, "RESPONSE_STREAM_BROKEN")


async def test_bodies_over_the_limit_get_a_413(start_engine: Callable[..., Awaitable[Engine]]) -> None:
    engine = await start_engine(http_max_body_bytes=100_000)
    worker = await serving(engine, "put.file", "/file", "PUT")
    status, body = await get(f"{base(engine)}/file", "PUT", data=b"x" * 100_001)  # Content-Length: refused at once
    assert (status, body["error"]["code"]) == (413, "BODY_TOO_LARGE")

    async def chunked() -> Any:
        for _ in range(30):
            yield b"y" * 10_000

    asking = asyncio.ensure_future(get(f"{base(engine)}/file", "PUT", data=chunked()))
    await worker.recv_type("invokefunction")  # without a length, the body streams until it is too long
    status, body = await asking
    assert (status, body["error"]["code"]) == (413, "BODY_TOO_LARGE")
    json_status, _ = await get(
        f"{base(engine)}/file", "PUT", data=b"[" + b"1," * 60_000 + b"1]", headers={"Content-Type": "application/json"}
    )
    assert json_status == 413


async def test_a_binding_to_a_builtin_function_serves_it(live_engine: Engine) -> None:
    worker = await RawWorker.connect(live_engine.url)
    await worker.send(http_binding("list", "engine::functions::list", {"api_path": "/functions", "http_method": "GET"}))
    await worker.ping()
    status, body = await get(f"{base(live_engine)}/functions")
    assert status == 200 and "functions" in body
