"""Per-worker limits and unusable answers: a worker past its limit, or a caller handed a result it cannot
decode, gets a clear error; other workers are not affected."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import websockets

from iii import InvocationError, register_worker
from iii.engine import Engine
from iii.protocol.refs import channel_url
from tests.engine.wire import RawWorker, connect_raw

StartEngine = Callable[..., Awaitable[Engine]]


async def test_pending_calls_past_the_limit_are_refused_and_others_go_on(start_engine: StartEngine) -> None:
    engine = await start_engine(worker_max_pending_calls=3)
    host = await RawWorker.connect(engine.url)
    await host.register("slow.fn")
    greedy = await RawWorker.connect(engine.url)
    for _ in range(3):
        await greedy.invoke("slow.fn", {})
    refused = await greedy.call("slow.fn", {})
    assert refused["error"]["code"] == "limit_exceeded"
    assert "--worker-max-pending-calls" in refused["error"]["message"]
    assert (await greedy.call("engine::functions::list", {})).get("error") is None  # builtins still answer
    other = await RawWorker.connect(engine.url)
    call_id = await other.invoke("slow.fn", {})  # another worker's calls are not limited by greedy's
    deliveries = [await host.recv_type("invokefunction") for _ in range(4)]
    assert len(deliveries) == 4
    # Once greedy's calls are answered it may call again.
    for delivery in deliveries:
        await host.send(
            {"type": "invocationresult", "invocation_id": delivery["invocation_id"], "function_id": "slow.fn"}
        )
    assert (await other.recv_type("invocationresult"))["invocation_id"] == call_id
    for _ in range(3):
        await greedy.recv_type("invocationresult")
    again = await greedy.invoke("slow.fn", {})
    delivery = await host.recv_type("invokefunction")
    await host.send({"type": "invocationresult", "invocation_id": delivery["invocation_id"], "function_id": "slow.fn"})
    assert (await greedy.recv_type("invocationresult"))["invocation_id"] == again


async def test_channels_past_the_limit_are_refused_until_some_finish(start_engine: StartEngine) -> None:
    engine = await start_engine(worker_max_channels=2)
    creator = await RawWorker.connect(engine.url)
    first = await creator.result_of("engine::channels::create", {})
    assert (await creator.call("engine::channels::create", {})).get("error") is None
    refused = await creator.call("engine::channels::create", {})
    assert refused["error"]["code"] == "limit_exceeded"
    assert "--worker-max-channels" in refused["error"]["message"]
    other = await RawWorker.connect(engine.url)
    assert (await other.call("engine::channels::create", {})).get("error") is None  # not limited by creator's
    # A finished channel no longer counts.
    writer = await connect_raw(channel_url(engine.url, **first["writer"]))
    reader = await connect_raw(channel_url(engine.url, **first["reader"]))
    await writer.send(b"data")
    await writer.close()
    assert await reader.recv() == b"data"
    with pytest.raises(websockets.ConnectionClosedOK):
        await reader.recv()
    assert (await creator.call("engine::channels::create", {})).get("error") is None


async def test_a_result_no_python_value_holds_is_a_clear_error_and_the_caller_goes_on(live_engine: Engine) -> None:
    host = await RawWorker.connect(live_engine.url)
    await host.register("odd.fn")
    client = await asyncio.to_thread(register_worker, live_engine.url)
    try:
        calling = asyncio.ensure_future(asyncio.to_thread(client.trigger, {"function_id": "odd.fn", "payload": {}}))
        delivery = await host.recv_type("invokefunction")
        await host.send(f'{{"type":"invocationresult","invocation_id":"{delivery["invocation_id"]}","result":1e999}}')
        with pytest.raises(InvocationError) as caught:
            await calling
        assert caught.value.code == "deserialization_error"
        listing = await asyncio.to_thread(client.trigger, {"function_id": "engine::functions::list", "payload": {}})
        assert "functions" in listing  # the connection survived
    finally:
        client.shutdown()
