"""The engine's core and the in-process module host, without sockets: workers are recording stand-ins that
keep what the core sends them (decoded), as a worker's socket would carry it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from iii.engine.config import EngineConfig
from iii.engine.core import Core
from iii.engine.module_host import InProcessHost
from iii.modules.api import BindingInfo, CallInfo, FunctionError, InvocationError
from iii.protocol.codec import decode_value, encode, encode_value
from iii.protocol.messages import InvocationResult, InvokeFunction, RegisterFunction, RegisterTrigger


class RecordingWorker:
    """What the core needs of a worker, keeping every message sent to it."""

    write_paused = False
    session = None

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.name = worker_id
        self.features: frozenset[str] = frozenset()
        self.metadata: dict[str, Any] = {}
        self.reattach_token = f"token-{worker_id}"
        self.peer_address = "test"
        self.connected_at = 0.0
        self.alive = True
        self.messages: list[dict[str, Any]] = []
        self._arrived: asyncio.Event | None = None

    def send_message(self, payload: bytes) -> None:
        self.messages.append(msgspec.json.decode(payload))
        if self._arrived is not None:
            self._arrived.set()

    async def results(self, count: int) -> list[dict[str, Any]]:
        """The first ``count`` invocation results, once they have arrived (5 s at most)."""
        async with asyncio.timeout(5):
            while len(self.of_type("invocationresult")) < count:
                self._arrived = asyncio.Event()
                await self._arrived.wait()
        return self.of_type("invocationresult")[:count]

    def deliver_result(self, invocation_id: str, function_id: str, result: msgspec.Raw, error: msgspec.Raw) -> None:
        answer = InvocationResult(invocation_id=invocation_id, function_id=function_id, result=result, error=error)
        self.send_message(encode(answer))

    def send_error_notice(self, code: str, message: str, function_id: str | None = None) -> None:
        self.messages.append({"type": "error", "code": code, "message": message, "function_id": function_id})

    def hold_reading_for(self, target: Any) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        self.alive = False

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [message for message in self.messages if message.get("type") == kind]


def raw(value: Any) -> msgspec.Raw:
    return msgspec.Raw(encode_value(value))


@pytest.fixture
def core() -> Core:
    return Core(EngineConfig(modules=""))


def connect(core: Core, worker_id: str) -> Any:
    worker = RecordingWorker(worker_id)
    core.on_worker_connected(worker)  # type: ignore[arg-type]
    return worker


def test_a_call_goes_to_the_owner_and_its_result_back_to_the_caller(core: Core) -> None:
    owner, caller = connect(core, "owner"), connect(core, "caller")
    core.on_worker_message(owner, RegisterFunction(id="math::double"))
    core.on_worker_message(caller, InvokeFunction(function_id="math::double", invocation_id="c-1", data=raw({"n": 2})))
    [delivery] = owner.of_type("invokefunction")
    assert delivery["function_id"] == "math::double"
    assert delivery["data"]["n"] == 2
    core.on_worker_message(owner, InvocationResult(invocation_id=delivery["invocation_id"], result=raw(4)))
    [answer] = caller.of_type("invocationresult")
    assert (answer["invocation_id"], answer["result"]) == ("c-1", 4)


def test_an_unknown_function_is_refused_to_its_caller(core: Core) -> None:
    caller = connect(core, "caller")
    core.on_worker_message(caller, InvokeFunction(function_id="nope", invocation_id="c-1"))
    [answer] = caller.of_type("invocationresult")
    assert answer["error"]["code"] == "function_not_found"


def test_a_calls_deadline_fails_it_with_timeout(core: Core) -> None:
    owner, caller = connect(core, "owner"), connect(core, "caller")
    core.on_worker_message(owner, RegisterFunction(id="slow"))
    core.on_worker_message(caller, InvokeFunction(function_id="slow", invocation_id="c-1", timeout_ms=1))
    start = time.monotonic()
    while not caller.of_type("invocationresult") and time.monotonic() - start < 5:
        core.calls.expire()  # what the server's housekeeping does on each tick
    [answer] = caller.of_type("invocationresult")
    assert answer["error"]["code"] == "TIMEOUT"


async def test_a_modules_functions_answer_at_once_or_when_their_awaitable_completes(core: Core) -> None:
    host = InProcessHost(core, "demo")
    seen: list[CallInfo] = []

    def echo(data: Any, call: CallInfo) -> Any:
        seen.append(call)
        return {"echo": data}

    async def later(data: Any, call: CallInfo) -> Any:
        await asyncio.sleep(0)
        if data == "bad":
            raise FunctionError("bad_input", "no bad input here")
        return "done"

    host.register_function("demo::echo", echo)
    host.register_function("demo::later", later)
    caller = connect(core, "caller")
    core.on_worker_message(caller, InvokeFunction(function_id="demo::echo", invocation_id="c-1", data=raw([1])))
    [answer] = caller.of_type("invocationresult")
    assert answer["result"] == {"echo": [1]}
    assert seen == [CallInfo(worker_id="caller")]

    core.on_worker_message(caller, InvokeFunction(function_id="demo::later", invocation_id="c-2", data=raw("ok")))
    core.on_worker_message(caller, InvokeFunction(function_id="demo::later", invocation_id="c-3", data=raw("bad")))
    assert len(caller.of_type("invocationresult")) == 1  # the awaitables have not run yet
    answers = {a["invocation_id"]: a for a in await caller.results(3)}
    assert answers["c-2"]["result"] == "done"
    assert answers["c-3"]["error"] == {"code": "bad_input", "message": "no bad input here"}


async def test_a_module_invokes_a_workers_function_and_gets_its_result_or_error(core: Core) -> None:
    host = InProcessHost(core, "demo")
    owner = connect(core, "owner")
    core.on_worker_message(owner, RegisterFunction(id="svc::add"))
    call = asyncio.ensure_future(host.invoke("svc::add", {"a": 1, "b": 2}))
    await asyncio.sleep(0)
    [delivery] = owner.of_type("invokefunction")
    core.on_worker_message(owner, InvocationResult(invocation_id=delivery["invocation_id"], result=raw(3)))
    assert await asyncio.wait_for(call, 5) == 3

    failing = asyncio.ensure_future(host.invoke("svc::add", {}))
    await asyncio.sleep(0)
    second = owner.of_type("invokefunction")[1]
    error = raw({"code": "invalid", "message": "a and b please"})
    core.on_worker_message(owner, InvocationResult(invocation_id=second["invocation_id"], error=error))
    with pytest.raises(InvocationError) as caught:
        await asyncio.wait_for(failing, 5)
    assert (caught.value.code, caught.value.message) == ("invalid", "a and b please")
    with pytest.raises(InvocationError) as missing:
        await host.invoke("svc::missing", None)
    assert missing.value.code == "function_not_found"


class Provider:
    def __init__(self) -> None:
        self.active: dict[str, BindingInfo] = {}

    def activate(self, binding: BindingInfo) -> str | None:
        if "topic" not in binding.config:
            return "a topic is needed"
        self.active[binding.binding_id] = binding
        return None

    def deactivate(self, binding: BindingInfo) -> None:
        del self.active[binding.binding_id]


def test_a_modules_trigger_type_gets_bindings_and_hears_workers_leave(core: Core) -> None:
    host = InProcessHost(core, "demo")
    provider = Provider()
    host.register_trigger_type("demo-topic", provider)
    left: list[str] = []
    host.on_worker_left(left.append)
    worker = connect(core, "binder")
    core.on_worker_message(worker, RegisterFunction(id="binder::on"))
    config = raw({"topic": "news"})
    bind = RegisterTrigger(id="b-1", trigger_type="demo-topic", function_id="binder::on", config=config)
    core.on_worker_message(worker, bind)
    assert provider.active["b-1"].config == {"topic": "news"}
    assert provider.active["b-1"].worker_id == "binder"
    core.on_worker_message(worker, RegisterTrigger(id="b-2", trigger_type="demo-topic", function_id="binder::on"))
    [refusal] = worker.of_type("triggerregistrationresult")
    assert decode_value(encode_value(refusal["error"]))["message"] == "a topic is needed"
    core.on_worker_disconnected(worker)
    assert provider.active == {}
    assert left == ["binder"]


def test_a_module_cannot_take_an_id_already_served(core: Core) -> None:
    host = InProcessHost(core, "demo")
    with pytest.raises(ValueError, match="already served"):
        host.register_function("engine::functions::list", lambda data, call: None)
