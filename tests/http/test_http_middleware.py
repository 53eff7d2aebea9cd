"""Per-route middleware (``middleware_function_ids``) on the wire: called in order before the function with
the reference engine's input, and answering the request itself when it says ``respond``.

The worker is a raw WebSocket client, so each test sees exactly which calls the engine makes, in which order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from iii.engine import Engine
from tests.engine.wire import RawWorker
from tests.http.test_http_bindings import base, get, http_binding

CONTINUE = {"action": "continue"}


async def guarded(engine: Engine, middleware: list[str], path: str = "/things/:id", method: str = "GET") -> RawWorker:
    """A worker with ``thing.get`` and the ``middleware`` functions, ``thing.get`` bound behind them."""
    worker = await RawWorker.connect(engine.url)
    for function_id in ["thing.get", *middleware]:
        await worker.register(function_id)
    config = {"api_path": path, "http_method": method, "middleware_function_ids": middleware}
    await worker.send(http_binding("b-thing", "thing.get", config))
    await worker.ping()
    return worker


async def fail(worker: RawWorker, code: str, message: str) -> dict[str, Any]:
    delivery = await worker.recv_type("invokefunction")
    error = {"code": code, "message": message}
    await worker.send({"type": "invocationresult", "invocation_id": delivery["invocation_id"], "error": error})
    return delivery


async def test_middleware_runs_in_order_with_the_reference_input_then_the_function(live_engine: Engine) -> None:
    worker = await guarded(live_engine, ["mw.log", "mw.auth"])
    asking = asyncio.ensure_future(get(f"{base(live_engine)}/things/42?q=hello&t=1&t=2", headers={"X-Key": "k"}))
    first = await worker.serve_one(lambda delivery: CONTINUE)
    second = await worker.serve_one(lambda delivery: CONTINUE)
    handler = await worker.serve_one(lambda delivery: {"status_code": 200, "body": {"id": 42}})
    assert [first["function_id"], second["function_id"], handler["function_id"]] == ["mw.log", "mw.auth", "thing.get"]
    data = first["data"]
    assert set(data) == {"phase", "request", "context"}  # no body, no channels
    assert (data["phase"], data["context"]) == ("preHandler", {})
    assert set(data["request"]) == {"method", "path_params", "query_params", "headers"}
    request = data["request"]
    assert (request["method"], request["path_params"], request["query_params"]) == (
        "GET",
        {"id": "42"},
        {"q": "hello", "t": ["1", "2"]},
    )
    assert request["headers"]["x-key"] == "k"
    assert second["data"] == data
    assert await asking == (200, {"id": 42})


async def test_a_middleware_that_responds_answers_and_nothing_after_it_runs(live_engine: Engine) -> None:
    worker = await guarded(live_engine, ["mw.auth", "mw.never"], "/upload", "PUT")
    refusal = {
        "action": "respond",
        "response": {"status_code": 403, "headers": {"X-Rejected-By": "auth"}, "body": {"error": "Forbidden"}},
    }
    async with aiohttp.ClientSession() as http:
        asking = asyncio.ensure_future(http.put(f"{base(live_engine)}/upload", data=b"x" * 3_000_000))
        delivery = await worker.serve_one(lambda delivery: refusal)
        async with await asking as response:
            assert (response.status, response.headers["X-Rejected-By"]) == (403, "auth")
            assert await response.json() == {"error": "Forbidden"}
    assert delivery["function_id"] == "mw.auth"
    await worker.send({"type": "ping"})
    assert (await worker.recv())["type"] == "pong"  # neither mw.never nor thing.get was called


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [
        ("fail", 500, "denied_badly"),
        ("bad response", 500, "INVALID_MIDDLEWARE_RESPONSE"),
        ("silence", 504, "MIDDLEWARE_TIMEOUT"),
    ],
)
async def test_a_middleware_that_fails_or_does_not_answer_stops_the_request(
    start_engine: Callable[..., Awaitable[Engine]],
    caplog: pytest.LogCaptureFixture,
    answer: str,
    status: int,
    code: str,
) -> None:
    engine = await start_engine(http_timeout_s=0.5)
    worker = await guarded(engine, ["mw.auth"])
    asking = asyncio.ensure_future(get(f"{base(engine)}/things/1"))
    if answer == "fail":
        delivery = await fail(worker, "denied_badly", "the policy store is down")
    elif answer == "bad response":
        delivery = await worker.serve_one(lambda delivery: {"action": "respond", "response": {"status_code": 1000}})
    else:
        delivery = await worker.recv_type("invokefunction")
    assert delivery["function_id"] == "mw.auth"
    got, body = await asking
    assert (got, body["error"]["code"]) == (status, code)
    assert "mw.auth" in body["error"]["message"] or answer == "fail"
    assert any(body["error"]["error_id"] in record.getMessage() for record in caplog.records)
    await worker.send({"type": "ping"})
    assert (await worker.recv())["type"] == "pong"  # the function itself was never called


async def test_an_unregistered_middleware_is_a_503(live_engine: Engine) -> None:
    worker = await RawWorker.connect(live_engine.url)
    await worker.register("thing.get")
    config = {"api_path": "/things", "http_method": "GET", "middleware_function_ids": ["mw.missing"]}
    await worker.send(http_binding("b-thing", "thing.get", config))
    await worker.ping()
    status, body = await get(f"{base(live_engine)}/things")
    assert (status, body["error"]["code"]) == (503, "function_not_found")
    assert "mw.missing" in body["error"]["message"]


async def test_a_result_without_a_known_action_is_logged_and_taken_as_continue(
    live_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await guarded(live_engine, ["mw.odd"])
    asking = asyncio.ensure_future(get(f"{base(live_engine)}/things/1"))
    await worker.serve_one(lambda delivery: {"allowed": True})
    await worker.serve_one(lambda delivery: {"status_code": 200, "body": "reached"})
    assert await asking == (200, "reached")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("mw.odd" in message and "allowed" in message for message in warnings), warnings


async def test_middleware_ids_must_be_a_list_of_ids_and_unknown_config_keys_are_logged(
    live_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await RawWorker.connect(live_engine.url)
    for binding_id, ids in [("not-list", "mw.auth"), ("not-ids", ["mw.auth", 7]), ("empty-id", [""])]:
        await worker.send(http_binding(binding_id, "f", {"api_path": "/x", "middleware_function_ids": ids}))
        refusal = await worker.recv_type("triggerregistrationresult")
        assert refusal["id"] == binding_id and "middleware_function_ids" in refusal["error"]["message"]
    config = {"api_path": "/x", "condition_function_id": "cond", "cors": {"origins": "*"}}
    await worker.send(http_binding("extra", "f", config))
    await worker.ping()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("extra" in m and "'condition_function_id'" in m and "'cors'" in m for m in warnings), warnings
    assert live_engine.http is not None and len(live_engine.http.routes) == 1  # accepted nonetheless


async def test_a_description_of_the_route_is_accepted_without_a_warning(
    live_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The reference's examples (and the official suite's test_healthcheck.py) describe their routes in the config
    (``description``, ``metadata`` tags): keys that ask nothing of the route, so nothing is ignored."""
    worker = await RawWorker.connect(live_engine.url)
    config = {"api_path": "/health", "description": "Healthcheck endpoint", "metadata": {"tags": ["ops"]}}
    await worker.send(http_binding("described", "f", config))
    await worker.ping()
    assert live_engine.http is not None and len(live_engine.http.routes) == 1
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_route_of_the_same_structure_with_other_parameter_names_is_refused(live_engine: Engine) -> None:
    worker = await RawWorker.connect(live_engine.url)
    await worker.send(http_binding("first", "f", {"api_path": "lists/:listId/:userId"}))
    await worker.send(http_binding("second", "g", {"api_path": "lists/:userId/:listId"}))
    refusal = await worker.recv_type("triggerregistrationresult")
    assert refusal["id"] == "second"
    assert refusal["error"]["message"] == (
        "Route 'GET /lists/:userId/:listId' conflicts with already-registered route 'GET /lists/:listId/:userId': "
        "routes with identical structure but different path-parameter names are not supported"
    )
