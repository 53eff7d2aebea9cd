"""Our SDK against a real engine: connecting, functions, calls, errors, timeouts, nesting and reconnects."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from iii import (
    III,
    EngineRefusedError,
    EngineUnavailableError,
    InitOptions,
    InvocationError,
    ReconnectionConfig,
    TriggerAction,
    UsageError,
    current_invocation,
    register_worker,
)
from iii.testing import EngineProcess
from tests.engine.wire import RawWorker

FAST_RECONNECT = ReconnectionConfig(initial_delay_ms=50, max_delay_ms=200, jitter_factor=0.0)


@pytest.fixture
def client(engine: EngineProcess) -> Iterator[III]:
    with register_worker(engine.url, InitOptions(worker_name="test-client")) as worker:
        yield worker


def test_sync_and_async_handlers_answer_sync_and_async_calls(client: III) -> None:
    client.register_function({"id": "math.double"}, lambda data: data["n"] * 2)

    async def add(data: dict[str, int]) -> int:
        await asyncio.sleep(0)
        return data["a"] + data["b"]

    client.register_function("math.add", add)
    assert client.trigger({"function_id": "math.double", "payload": {"n": 21}}) == 42
    assert client.trigger({"function_id": "math.add", "payload": {"a": 2, "b": 3}}) == 5

    async def from_async_code() -> list[Any]:
        return [
            await client.trigger({"function_id": "math.double", "payload": {"n": 5}}),
            await client.trigger_async({"function_id": "math.add", "payload": {"a": 1, "b": 1}}),
        ]

    assert asyncio.run(from_async_code()) == [10, 2]


def test_handlers_get_the_payload_as_sent_and_the_caller_in_their_context(client: III) -> None:
    """The engine adds ``_caller_worker_id`` to object payloads (for the official SDKs); our handlers get the
    payload as the caller sent it (so ``area(**data)`` works) and the caller from ``current_invocation()``."""
    seen: dict[str, Any] = {}

    def handler(data: dict[str, Any], metadata: Any) -> str:
        seen.update(data=data, metadata=metadata, context=current_invocation())
        return "ok"

    async def async_handler(data: dict[str, Any]) -> Any:
        await asyncio.sleep(0)
        return client.current_invocation()

    def area(width: int, height: int) -> int:
        return width * height

    client.register_function("meta.echo", handler)
    client.register_function("meta.context", async_handler)
    client.register_function("math.area", lambda data: area(**data))
    assert client.trigger({"function_id": "meta.echo", "payload": {"x": 1}, "metadata": {"tenant": "t1"}}) == "ok"
    assert seen["metadata"] == {"tenant": "t1"}
    assert seen["data"] == {"x": 1}
    context = seen["context"]
    assert context.function_id == "meta.echo" and context.caller == {"worker_id": client.worker_id}
    assert context.metadata == {"tenant": "t1"} and context.invocation_id
    assert client.trigger({"function_id": "math.area", "payload": {"width": 3, "height": 4}}) == 12
    async_context = client.trigger({"function_id": "meta.context", "payload": {}})
    assert async_context["function_id"] == "meta.context"
    assert async_context["caller"] == {"worker_id": client.worker_id}
    assert current_invocation() is None  # outside every handler


def test_handler_errors_arrive_as_invocation_failed_with_the_traceback(client: III) -> None:
    def broken(data: Any) -> None:
        raise ValueError("no such order")

    async def broken_async(data: Any) -> None:
        raise KeyError("sku")

    client.register_function("orders.broken", broken)
    client.register_function("orders.broken_async", broken_async)
    with pytest.raises(InvocationError) as caught:
        client.trigger({"function_id": "orders.broken", "payload": {}})
    assert caught.value.code == "invocation_failed"
    assert caught.value.message == "no such order"
    assert caught.value.stacktrace is not None and "ValueError: no such order" in caught.value.stacktrace
    assert "in broken" in caught.value.stacktrace
    assert str(caught.value) == "invocation_failed: no such order"
    with pytest.raises(InvocationError) as caught_async:
        client.trigger({"function_id": "orders.broken_async", "payload": {}})
    assert "KeyError" in (caught_async.value.stacktrace or "")


def test_results_that_cannot_be_sent_are_a_clear_failure(client: III) -> None:
    client.register_function("bad.result", lambda data: object())
    with pytest.raises(InvocationError) as caught:
        client.trigger({"function_id": "bad.result"})
    assert caught.value.code == "invocation_failed"
    assert "could not be sent" in caught.value.message


def test_calls_and_results_over_the_engines_limit_are_refused_before_sending() -> None:
    """The engine announces its message limit; a call over it raises ``message_too_big`` in the caller and a
    result over it reaches the caller as that error, nothing is sent, and the connection goes on."""
    with (
        EngineProcess(["--max-message-bytes", str(1024 * 1024)]) as engine,
        register_worker(engine.url, InitOptions(worker_name="limits")) as client,
    ):
        client.register_function("big.echo", lambda data: data)
        client.register_function("big.result", lambda data: "r" * (1024 * 1024))
        blob = {"blob": "b" * (1024 * 1024)}
        with pytest.raises(InvocationError) as too_big:
            client.trigger({"function_id": "big.echo", "payload": blob})
        assert too_big.value.code == "message_too_big" and "not sent" in too_big.value.message

        async def from_async_code() -> None:
            with pytest.raises(InvocationError) as in_async:
                await client.trigger({"function_id": "big.echo", "payload": blob})
            assert in_async.value.code == "message_too_big"

        asyncio.run(from_async_code())
        with pytest.raises(InvocationError) as result_too_big:
            client.trigger({"function_id": "big.result", "payload": {}})
        assert result_too_big.value.code == "message_too_big"
        assert "big.result" in result_too_big.value.message and "not sent" in result_too_big.value.message
        assert client.trigger({"function_id": "big.echo", "payload": {"small": 1}})["small"] == 1
        assert client.get_connection_state() == "connected"
    assert "not acted on" not in engine.log_text()  # the engine never saw the oversized messages


def test_unknown_functions_and_timeouts(client: III) -> None:
    with pytest.raises(InvocationError) as missing:
        client.trigger({"function_id": "nope.nothing"})
    assert missing.value.code == "function_not_found"

    release = threading.Event()
    client.register_function("slow.wait", lambda data: release.wait(10))
    started = time.monotonic()
    with pytest.raises(InvocationError) as timed_out:
        client.trigger({"function_id": "slow.wait", "timeout_ms": 200})
    release.set()
    assert timed_out.value.code == "TIMEOUT"
    assert "200ms" in timed_out.value.message
    assert time.monotonic() - started < 5


def test_void_triggers_return_at_once_and_the_call_still_runs(client: III) -> None:
    arrived = threading.Event()
    payloads: list[Any] = []

    def sink(data: Any) -> None:
        payloads.append(data)
        arrived.set()

    client.register_function("events.sink", sink)
    assert client.trigger({"function_id": "events.sink", "payload": {"n": 1}, "action": TriggerAction.Void()}) is None
    assert arrived.wait(5)
    assert payloads[0]["n"] == 1


def test_enqueue_triggers_answer_a_receipt_and_the_call_runs_later(client: III) -> None:
    arrived = threading.Event()
    client.register_function("jobs.sink", lambda data: arrived.set())
    for action in (TriggerAction.Enqueue(queue="default"), {"type": "enqueue", "queue": "default"}):
        arrived.clear()
        answer = client.trigger({"function_id": "jobs.sink", "payload": {"n": 1}, "action": action})
        assert list(answer) == ["messageReceiptId"]
        assert arrived.wait(5)


def test_nested_sync_triggers_on_one_worker_do_not_deadlock(client: III) -> None:
    def countdown(data: dict[str, int]) -> int:
        if data["n"] == 0:
            return 0
        return 1 + client.trigger({"function_id": "nest.countdown", "payload": {"n": data["n"] - 1}})

    client.register_function("nest.countdown", countdown)
    assert client.trigger({"function_id": "nest.countdown", "payload": {"n": 40}}) == 40


def test_misuse_is_refused_locally(client: III) -> None:
    client.register_function("dup", lambda data: None)
    with pytest.raises(UsageError):
        client.register_function("dup", lambda data: None)
    with pytest.raises(UsageError):
        client.register_function({"description": "no id"}, lambda data: None)
    with pytest.raises(UsageError):
        client.trigger({"payload": {}})
    with pytest.raises(TypeError):
        client.trigger({"function_id": "dup", "payload": {"not": object()}})
    with pytest.raises(UsageError, match="queue name"):
        client.trigger({"function_id": "dup", "payload": {}, "action": {"type": "enqueue"}})
    with pytest.raises(UsageError, match="unknown trigger action 'later'"):
        client.trigger({"function_id": "dup", "payload": {}, "action": {"type": "later"}})


def test_unregistered_functions_are_gone(client: III, engine: EngineProcess) -> None:
    ref = client.register_function("temp.fn", lambda data: 1)
    assert client.trigger({"function_id": "temp.fn"}) == 1
    ref.unregister()
    listing = client.trigger({"function_id": "engine::functions::list", "payload": {}})
    assert "temp.fn" not in [f["function_id"] for f in listing["functions"]]


def test_an_unreachable_engine_is_a_clear_error() -> None:
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError) as caught:
        register_worker("ws://127.0.0.1:9", InitOptions(connect_timeout_s=0.5, reconnection_config=FAST_RECONNECT))
    assert "ws://127.0.0.1:9" in str(caught.value)
    assert time.monotonic() - started < 5


def test_a_refused_token_raises_instead_of_retrying(monkeypatch: pytest.MonkeyPatch) -> None:
    with EngineProcess(["--token", "right"]) as engine:
        started = time.monotonic()
        with pytest.raises(EngineRefusedError) as caught:
            register_worker(engine.url, InitOptions(token="wrong", connect_timeout_s=10))
        assert "unauthorized" in str(caught.value)
        assert time.monotonic() - started < 5  # refused at once, not after the connect timeout
        monkeypatch.setenv("III_TOKEN", "right")
        with register_worker(engine.url) as worker:
            channel = worker.create_channel()  # channel sockets carry the token too
            channel.writer.write(b"authorized")
            channel.writer.close()
            assert channel.reader.read_all() == b"authorized"


def test_the_url_comes_from_iii_url_when_not_given(engine: EngineProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("III_URL", engine.url)
    with register_worker() as worker:
        assert worker.address == engine.url
        assert worker.trigger({"function_id": "engine::workers::list", "payload": {}})["workers"]


def test_workers_reconnect_and_re_register_after_an_engine_restart() -> None:
    first = EngineProcess().start()
    port = first.port
    options = InitOptions(worker_name="survivor", reconnection_config=FAST_RECONNECT)
    worker = register_worker(first.url, options)
    try:
        release, entered, reconnected = threading.Event(), threading.Event(), threading.Event()
        states: list[str] = []

        def block(data: Any) -> bool:
            entered.set()
            return release.wait(30)

        def on_state(state: str) -> None:
            states.append(state)
            if state == "connected" and "reconnecting" in states:
                reconnected.set()

        worker.register_function("svc.echo", lambda data: data)
        worker.register_function("svc.block", block)
        worker.add_connection_state_listener(on_state)
        assert worker.trigger({"function_id": "svc.echo", "payload": "before"}) == "before"

        in_flight: dict[str, BaseException] = {}

        def call_blocking() -> None:
            try:
                worker.trigger({"function_id": "svc.block", "timeout_ms": 30_000})
            except BaseException as exc:
                in_flight["error"] = exc

        caller = threading.Thread(target=call_blocking)
        caller.start()
        assert entered.wait(10)
        first.kill()
        caller.join(5)
        release.set()
        assert isinstance(in_flight.get("error"), InvocationError)
        assert in_flight["error"].code == "invocation_stopped"  # type: ignore[attr-defined]

        with EngineProcess(["--port", str(port)]) as second:
            assert reconnected.wait(15)
            assert states[:3] == ["connected", "reconnecting", "connected"]
            # Registrations are replayed on the new connection before anything else is sent on it.
            assert worker.trigger({"function_id": "svc.echo", "payload": "after"}) == "after"
            names = [w["name"] for w in worker.trigger({"function_id": "engine::workers::list"})["workers"]]
            assert names == ["survivor"]
            second.stop()
    finally:
        worker.shutdown()
        first.stop()


def test_a_refused_duplicate_stands_by_and_takes_over_when_the_owner_leaves(engine: EngineProcess) -> None:
    """A rolling restart: the new instance registers while the old one serves, is told it stands by, and
    serves as soon as the old one exits (before, it was refused for good and calls got function_not_found)."""
    old = register_worker(engine.url, InitOptions(worker_name="old"))
    old_ref = old.register_function("svc.who", lambda data: "old")
    assert old_ref.wait_active(10) and old_ref.status == "active"
    with register_worker(engine.url, InitOptions(worker_name="new")) as new, register_worker(engine.url) as caller:
        new_ref = new.register_function("svc.who", lambda data: "new")
        assert new_ref.wait_status("standby", "active", timeout_s=10) == "standby"
        assert caller.trigger({"function_id": "svc.who"}) == "old"
        old.shutdown()
        assert new_ref.wait_active(10)
        assert caller.trigger({"function_id": "svc.who"}) == "new"
        builtin = new.register_function("engine::functions::list", lambda data: None)
        assert not builtin.wait_active(10)  # refused for good, said at once
        assert builtin.status == "refused"
        new_ref.unregister()
        assert new_ref.status == "unregistered" and not new_ref.wait_active(1)


def test_a_worker_refused_for_good_does_not_hold_its_process() -> None:
    """A serving worker whose engine comes back with a token it does not have is refused for good; its script
    has ended, so the process ends too (the keep-alive was held forever before)."""
    script = (
        "import sys\nfrom iii import InitOptions, ReconnectionConfig, register_worker\n"
        "fast = ReconnectionConfig(initial_delay_ms=50, max_delay_ms=200, jitter_factor=0.0)\n"
        "client = register_worker(sys.argv[1], InitOptions(reconnection_config=fast))\n"
        "client.register_function('f', lambda data: data)\n"
        "print('serving', flush=True)\n"
    )
    first = EngineProcess().start()
    port = first.port
    child = subprocess.Popen([sys.executable, "-c", script, first.url], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "serving"
        first.stop()
        with EngineProcess(["--port", str(port), "--token", "a-token-the-worker-lacks"]):
            assert child.wait(30) == 0
    finally:
        child.kill()
        child.wait(10)
        first.stop()


async def test_a_handler_that_returns_none_answers_with_no_result_field(engine: EngineProcess) -> None:
    """As the official SDKs do: a Node caller reads a missing ``result`` as ``undefined``, an explicit null as null."""
    with register_worker(engine.url, InitOptions(worker_name="nothing")) as client:
        assert client.register_function("nothing.here", lambda data: None).wait_active(10)
        caller = await RawWorker.connect(engine.url)
        try:
            answer = await caller.call("nothing.here", {})
        finally:
            await caller.close()
    assert answer["type"] == "invocationresult"
    assert "result" not in answer and "error" not in answer
