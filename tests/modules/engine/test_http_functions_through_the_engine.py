"""HTTP-invoked functions in a real engine: a worker registers a function with an ``invocation`` through our
SDK, other workers call it, and the engine calls the URL (a real HTTP server on loopback)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel

from iii import InitOptions, InvocationError, register_worker
from iii.engine import Engine
from tests.modules.http_functions.conftest import LOOPBACK
from tests.modules.http_functions.endpoints import Endpoints

SECRET = "engine-side-Secret-77"


@pytest.fixture
async def engine(start_engine: Callable[..., Awaitable[Engine]]) -> Engine:
    return await start_engine(http_port=-1, module_settings={"http_functions": LOOPBACK})


class HookConfig(BaseModel):
    """A model of the shape of the official SDK's ``HttpInvocationConfig``: our SDK takes it as it is."""

    url: str
    method: str = "POST"
    timeout_ms: int | None = None


def functions_of(client: Any, function_id: str) -> list[dict[str, Any]]:
    rows = client.trigger({"function_id": "engine::functions::list", "payload": {}})["functions"]
    return [row for row in rows if row["function_id"] == function_id]


async def test_a_worker_registers_an_http_function_that_other_workers_call(
    engine: Engine,
    endpoints: Endpoints,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", SECRET)
    url = f"ws://127.0.0.1:{engine.port}"
    invocation = {
        "url": endpoints.url("/echo"),
        "method": "PUT",
        "headers": {"X-Custom": "present"},
        "auth": {"type": "bearer", "token_key": "HOOK_TOKEN"},
    }

    def scenario() -> dict[str, Any]:
        with (
            register_worker(url, InitOptions(worker_name="hooks-owner")) as owner,
            register_worker(url, InitOptions(worker_name="caller")) as caller,
        ):
            ref = owner.register_function("hooks::echo", invocation)
            assert ref.wait_active(5)
            seen: dict[str, Any] = {"result": caller.trigger({"function_id": "hooks::echo", "payload": {"n": 1}})}
            seen["caller_id"] = caller.worker_id
            seen["listed"] = functions_of(caller, "hooks::echo")
            seen["owner_id"] = owner.worker_id
            ref.unregister()
            with pytest.raises(InvocationError) as gone:  # sent after the unregister, on the same socket
                owner.trigger({"function_id": "hooks::echo", "payload": {}})
            seen["after_unregister"] = gone.value.code
            return seen

    with caplog.at_level(logging.DEBUG):
        seen = await asyncio.to_thread(scenario)
    assert seen["result"]["method"] == "PUT"
    [request] = endpoints.requests
    assert request.method == "PUT"
    assert request.headers["Authorization"] == f"Bearer {SECRET}"
    assert request.headers["X-Custom"] == "present"
    assert request.headers["x-iii-Function-Path"] == "hooks::echo"
    assert request.body == b'{"n":1,"_caller_worker_id":"' + seen["caller_id"].encode() + b'"}'
    assert seen["listed"] == [
        {
            "function_id": "hooks::echo",
            "namespace": "default",
            "worker_name": "hooks-owner",
            "worker_id": seen["owner_id"],
        }
    ]
    assert seen["after_unregister"] == "function_not_found"
    assert "served by http_functions" in caplog.text
    assert SECRET not in caplog.text


async def test_an_http_function_goes_with_its_worker_and_a_refused_one_is_reported(
    engine: Engine, endpoints: Endpoints
) -> None:
    url = f"ws://127.0.0.1:{engine.port}"

    def scenario() -> tuple[str, list[dict[str, Any]], str]:
        with register_worker(url, InitOptions(worker_name="caller")) as caller:
            with register_worker(url, InitOptions(worker_name="short-lived")) as owner:
                ref = owner.register_function("hooks::echo", HookConfig(url=endpoints.url("/echo")))
                refused = owner.register_function("hooks::private", {"url": "http://10.0.0.1/x"})
                assert ref.wait_active(5)
                refused_status = refused.wait_status("active", "refused", timeout_s=5)
                assert caller.trigger({"function_id": "hooks::echo", "payload": {}})["method"] == "POST"
            deadline = time.monotonic() + 10  # the engine sees the socket close soon after the worker's shutdown
            while functions_of(caller, "hooks::echo") and time.monotonic() < deadline:
                pass
            remaining = functions_of(caller, "hooks::echo") + functions_of(caller, "hooks::private")
            with pytest.raises(InvocationError) as gone:
                caller.trigger({"function_id": "hooks::echo", "payload": {}})
            return refused_status, remaining, gone.value.code

    refused_status, remaining, code = await asyncio.to_thread(scenario)
    assert refused_status == "refused"
    assert remaining == []
    assert code == "function_not_found"
    assert len(endpoints.requests) == 1


async def test_without_the_module_the_engine_refuses_http_functions(
    start_engine: Callable[..., Awaitable[Engine]], endpoints: Endpoints
) -> None:
    engine = await start_engine(http_port=-1, modules="state")
    url = f"ws://127.0.0.1:{engine.port}"

    def scenario() -> str:
        with register_worker(url, InitOptions(worker_name="owner")) as owner:
            ref = owner.register_function("hooks::echo", {"url": endpoints.url("/echo")})
            return ref.wait_status("active", "refused", timeout_s=5)

    assert await asyncio.to_thread(scenario) == "refused"
    assert endpoints.requests == []
