"""Connections that go silent without closing (a loopback proxy stops forwarding) are detected by pings,
on the engine's side and on the SDK's, within the configured bounds."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

import pytest

from iii import InitOptions, InvocationError, register_worker
from iii.engine import Engine
from tests.engine.wire import RawWorker
from tests.reliability.proxy import FreezableProxy

StartEngine = Callable[..., Awaitable[Engine]]


async def test_the_engine_drops_a_worker_whose_connection_went_silent(start_engine: StartEngine) -> None:
    engine = await start_engine(worker_ping_interval_s=0.2, worker_ping_timeout_s=0.3)
    proxy = await FreezableProxy("127.0.0.1", engine.port).start()
    # The host connects through the proxy and never pings by itself (its SDK pings are off).
    host = await asyncio.to_thread(
        register_worker, f"ws://127.0.0.1:{proxy.port}", InitOptions(worker_name="behind-proxy", ping_idle_s=0)
    )
    try:
        release = threading.Event()
        host.register_function("silent.fn", lambda data: release.wait(30))
        caller = await RawWorker.connect(engine.url)
        await _until_registered(caller, "silent.fn")
        invocation_id = await caller.invoke("silent.fn", {})
        proxy.freeze()
        frozen_at = time.monotonic()
        answer = await caller.recv_type("invocationresult", timeout_s=10)
        detected_s = time.monotonic() - frozen_at
        print(f"silent connection detected after {detected_s:.2f} s")  # reported in docs/RELIABILITY.md
        assert (answer["invocation_id"], answer["error"]["code"]) == (invocation_id, "invocation_stopped")
        # Bound: the silence must first reach the ping interval, then the ping timeout, checked every 50 ms.
        assert detected_s < 0.2 + 0.3 + 1.0, f"detected after {detected_s:.2f} s"
        release.set()
    finally:
        host.shutdown()
        await proxy.close()


async def test_the_sdk_fails_calls_on_a_connection_that_went_silent(start_engine: StartEngine) -> None:
    engine = await start_engine(worker_ping_interval_s=0)  # the engine never pings: only the SDK can notice
    proxy = await FreezableProxy("127.0.0.1", engine.port).start()
    host = await RawWorker.connect(engine.url)
    await host.register("never.answers")
    client = await asyncio.to_thread(
        register_worker,
        f"ws://127.0.0.1:{proxy.port}",
        InitOptions(worker_name="sdk-behind-proxy", ping_idle_s=0.2, ping_timeout_s=0.3),
    )
    try:
        calling = asyncio.ensure_future(
            asyncio.to_thread(client.trigger, {"function_id": "never.answers", "payload": {}, "timeout_ms": 20_000})
        )
        await host.recv_type("invokefunction")  # the call is in flight
        proxy.freeze()
        frozen_at = time.monotonic()
        with pytest.raises(InvocationError) as failure:
            await calling
        detected_s = time.monotonic() - frozen_at
        print(f"silent connection detected after {detected_s:.2f} s")  # reported in docs/RELIABILITY.md
        assert failure.value.code == "invocation_stopped"
        # Bound: idle time (raised to the timeout, 0.3 s), then the ping timeout.
        assert detected_s < 0.3 + 0.3 + 1.0, f"detected after {detected_s:.2f} s"
    finally:
        client.shutdown()
        await proxy.close()


async def _until_registered(worker: RawWorker, function_id: str) -> None:
    """Registration from another connection has no acknowledgement: ask the engine until it lists it."""
    async with asyncio.timeout(10):
        while True:
            listed = await worker.result_of("engine::functions::list", {})
            if any(f["function_id"] == function_id for f in listed["functions"]):
                return
