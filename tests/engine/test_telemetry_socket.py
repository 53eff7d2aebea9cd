"""The engine's ``/otel`` socket: telemetry reaches the module that receives it (the observability module), and
nothing a sender gets wrong costs it, or anyone else, a connection.

In-process engines on ephemeral ports; the senders are raw WebSockets sending what the SDKs send (a 4-byte tag
and OTLP/JSON), and the observability module's functions answer a raw worker. The engine's shutdown closes the telemetry
sockets left open (1001).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from iii.engine.server import Engine
from iii.engine.telemetry_intake import TelemetryIntake
from tests.engine.wire import RawWorker, connect_raw, scrape
from tests.modules.observability.frames import logs_message

StartEngine = Callable[..., Awaitable[Engine]]


async def bodies(worker: RawWorker, **query: Any) -> list[str]:
    answer = await worker.result_of("engine::logs::list", query)
    return [row["body"] for row in answer["logs"]]


async def listed(worker: RawWorker, expected: list[str]) -> None:
    """Wait until the logs listed (newest first) are ``expected`` (the socket and the call race)."""
    async with asyncio.timeout(5):
        while await bodies(worker) != expected:  # asking again is the wait
            pass


async def test_logs_sent_on_otel_are_listed(start_engine: StartEngine) -> None:
    engine = await start_engine()
    worker = await RawWorker.connect(engine.url)
    telemetry = await connect_raw(engine.url + "/otel")
    await telemetry.send(logs_message("first", "second"))
    await listed(worker, ["second", "first"])
    await telemetry.close()


async def test_malformed_and_oversized_messages_are_dropped_and_counted_and_every_connection_goes_on(
    start_engine: StartEngine,
) -> None:
    engine = await start_engine(max_message_bytes=64 * 1024)
    worker = await RawWorker.connect(engine.url)
    bystander = await connect_raw(engine.url + "/otel")
    telemetry = await connect_raw(engine.url + "/otel")
    await telemetry.send(b"LOGS{not json")
    await telemetry.send(b"OTLP" + b'{"resourceSpans": 7}')
    await telemetry.send(b"????")
    await telemetry.send("a text frame")
    await telemetry.send(b"LOGS" + b" " * (64 * 1024))  # past --max-message-bytes
    await telemetry.send(logs_message("after the bad ones"))
    await bystander.send(logs_message("from the bystander"))
    await listed(worker, ["from the bystander", "after the bad ones"])
    _, samples = await scrape(engine)
    assert samples[("iii_observability_messages_total", "module=observability,outcome=malformed,signal=logs")] == 1
    assert samples[("iii_observability_messages_total", "module=observability,outcome=malformed,signal=spans")] == 1
    assert samples[("iii_observability_messages_total", "module=observability,outcome=malformed,signal=unknown")] == 1
    await worker.ping()
    for socket in (telemetry, bystander):
        await socket.ping()
        assert socket.close_code is None
        await socket.close()


async def test_a_fragmented_message_is_joined(start_engine: StartEngine) -> None:
    engine = await start_engine()
    worker = await RawWorker.connect(engine.url)
    telemetry = await connect_raw(engine.url + "/otel")
    message = logs_message("in three fragments")
    third = len(message) // 3
    await telemetry.send([message[:third], message[third : 2 * third], message[2 * third :]])
    await listed(worker, ["in three fragments"])
    await telemetry.close()


async def test_telemetry_on_the_worker_socket_is_taken_too(start_engine: StartEngine) -> None:
    """As the reference engine does: a tagged binary frame on the control socket is telemetry, not an error."""
    engine = await start_engine()
    worker = await RawWorker.connect(engine.url)
    await worker.send(logs_message("on the control socket"))
    await listed(worker, ["on the control socket"])


async def test_the_bounds_set_in_the_config_hold(start_engine: StartEngine) -> None:
    engine = await start_engine(module_settings={"observability": {"logs_max_count": 2}})
    worker = await RawWorker.connect(engine.url)
    telemetry = await connect_raw(engine.url + "/otel")
    for index in range(5):
        await telemetry.send(logs_message(f"line {index}"))
    await listed(worker, ["line 4", "line 3"])
    _, samples = await scrape(engine)
    assert samples[("iii_observability_dropped_total", "module=observability,signal=logs")] == 3
    await telemetry.close()


async def test_without_the_module_otel_is_read_and_dropped(start_engine: StartEngine) -> None:
    engine = await start_engine(modules="")
    worker = await RawWorker.connect(engine.url)
    telemetry = await connect_raw(engine.url + "/otel")
    await telemetry.send(logs_message("dropped"))
    await telemetry.send([b"LOGS", b"{}"])
    await telemetry.ping()
    assert telemetry.close_code is None
    answer = await worker.call("engine::logs::list", {})
    assert answer["error"]["code"] == "function_not_found", answer
    await telemetry.close()


async def test_shutdown_closes_telemetry_sockets_with_going_away_without_waiting_out_the_grace(
    start_engine: StartEngine,
) -> None:
    """An SDK's telemetry socket is told the engine is going away (1001, as the worker sockets are), so that its
    sender stops or reconnects elsewhere, and the engine's shutdown does not wait its grace for it to leave."""
    engine = await start_engine(shutdown_grace_s=60.0)
    worker = await RawWorker.connect(engine.url)
    telemetry = await connect_raw(engine.url + "/otel")
    await telemetry.send(logs_message("before the shutdown"))
    await listed(worker, ["before the shutdown"])
    async with asyncio.timeout(10):  # far under the grace
        await engine.stop()
        await telemetry.wait_closed()
    assert (telemetry.close_code, telemetry.close_reason) == (1001, "the engine is shutting down")


async def test_a_flood_pauses_the_socket_and_every_message_arrives_in_order(start_engine: StartEngine) -> None:
    """More telemetry than the engine takes in per turn waits in its intake; past the intake's bound the socket is
    no longer read (the sender's buffers hold the rest) and is read again once the intake drains: nothing lost."""
    engine = await start_engine()
    engine.telemetry_intake = TelemetryIntake(engine.core.on_telemetry, max_queued_bytes=16 * 1024)
    worker = await RawWorker.connect(engine.url)
    telemetry = await connect_raw(engine.url + "/otel")
    count = 2000
    for n in range(count):
        await telemetry.send(logs_message(f"line {n}"))
    _, samples = await scrape(engine)
    stored = ("iii_observability_messages_total", "module=observability,outcome=stored,signal=logs")
    async with asyncio.timeout(10):
        while samples.get(stored) != count:  # asking again is the wait
            _, samples = await scrape(engine)
    assert engine.telemetry_intake.pauses > 0
    assert await bodies(worker, limit=count) == [f"line {n}" for n in reversed(range(count))]
    await worker.ping()
    await telemetry.ping()
    await telemetry.close()
