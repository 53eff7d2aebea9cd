"""The RBAC worker listener in a real engine: a trusted worker (our SDK, on the engine's own port) registers the
auth, hook and middleware functions and the functions others call; workers on the RBAC port (our SDK, and raw
protocol clients where the wire itself is what is checked) are admitted, limited, rewritten and refused."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from iii import InitOptions, InvocationError, register_worker
from iii.engine import Engine
from iii.errors import EngineRefusedError, EngineUnavailableError
from iii.sdk.client import III
from iii.sdk.functions import FunctionRef
from tests.engine.wire import RawWorker, connect_raw

AUTH = "trusted::auth"
MIDDLEWARE = "trusted::middleware"
ON_FUNCTION = "trusted::on-function"
ON_TRIGGER = "trusted::on-trigger"
ON_TRIGGER_TYPE = "trusted::on-trigger-type"
TOKEN = "Secret-Token-4711"
"""A credential: it must never appear in the engine's log."""

GRANTS: dict[str, dict[str, Any]] = {
    TOKEN: {"allowed_functions": ["svc::allowed"], "allow_trigger_type_registration": True, "context": {"user": "u1"}},
    "restricted-token": {"forbidden_functions": ["api::echo"], "context": {"user": "u2"}},
    "partner-token": {"function_registration_prefix": "partner", "context": {"user": "p"}},
    "no-registrations": {"allow_function_registration": False, "allowed_trigger_types": ["cron"], "context": {}},
    "not-an-auth-result": {"allowed_functions": "svc::allowed"},
}
EXPOSE = ['match("api::*")', 'match("engine::functions::*")', {"metadata": {"public": True}}]


class Trusted:
    """The trusted side: the functions the RBAC settings name and the functions RBAC workers call, served by one
    worker of our SDK on the engine's own port, recording what they were given."""

    def __init__(self, client: III) -> None:
        self.client = client
        self.auth_inputs: list[dict[str, Any]] = []
        self.middleware_inputs: list[dict[str, Any]] = []
        self.hook_inputs: list[tuple[str, dict[str, Any]]] = []
        self.called: list[str] = []
        self.refs: dict[str, FunctionRef] = {}
        self.auth_gate = threading.Event()
        self.auth_gate.set()

    def serve(self, with_hooks: bool = True) -> None:
        handlers: dict[str, Callable[[Any], Any]] = {AUTH: self.auth, MIDDLEWARE: self.middleware}
        if with_hooks:
            handlers |= {
                ON_FUNCTION: self.on_function,
                ON_TRIGGER: self.on_trigger,
                ON_TRIGGER_TYPE: self.on_trigger_type,
            }
        for function_id, handler in handlers.items():
            self.refs[function_id] = self.client.register_function(function_id, handler)
        for function_id, metadata in [
            ("api::echo", None),
            ("internal::secret", None),
            ("svc::allowed", None),
            ("tagged::public", {"public": True}),
            ("tagged::almost", {"public": 1}),
        ]:
            registration = {"id": function_id, "metadata": metadata}
            self.refs[function_id] = self.client.register_function(registration, self.recorder(function_id))
        assert all(ref.wait_active(5) for ref in self.refs.values())

    def recorder(self, function_id: str) -> Callable[[Any], Any]:
        def handler(data: Any) -> Any:
            self.called.append(function_id)
            return {"function": function_id, "data": data}

        return handler

    def auth(self, data: dict[str, Any]) -> Any:
        self.auth_inputs.append(data)
        assert self.auth_gate.wait(10)
        token = data["headers"].get("x-token")
        if token == "slow":
            time.sleep(2)
        if token not in GRANTS:
            raise ValueError(f"unknown token {token}")
        return GRANTS[token]

    def middleware(self, data: dict[str, Any]) -> Any:
        self.middleware_inputs.append(data)
        if data["payload"].get("deny"):
            raise ValueError("the middleware says no")
        payload = {**data["payload"], "via": "middleware", "user": data["context"].get("user")}
        return self.client.trigger({"function_id": data["function_id"], "payload": payload})

    def on_function(self, data: dict[str, Any]) -> Any:
        self.hook_inputs.append((ON_FUNCTION, data))
        if data["function_id"].startswith("denied::"):
            raise ValueError("no denied:: functions")
        if data["function_id"].startswith("rename::"):
            return {"function_id": "renamed::" + data["function_id"][len("rename::") :], "description": "renamed"}
        return {"function_id": None, "description": None, "metadata": None}  # as the SDKs' models dump "no change"

    def on_trigger(self, data: dict[str, Any]) -> Any:
        self.hook_inputs.append((ON_TRIGGER, data))
        if data["function_id"].startswith("denied::"):
            raise ValueError("no triggers of denied:: functions")
        return {"config": {**(data["config"] or {}), "checked": True}}

    def on_trigger_type(self, data: dict[str, Any]) -> Any:
        self.hook_inputs.append((ON_TRIGGER_TYPE, data))
        if data["trigger_type_id"].startswith("denied::"):
            raise ValueError("no denied:: trigger types")
        return {}


StartRbac = Callable[..., Awaitable[Engine]]


@pytest.fixture
def start_rbac(start_engine: Callable[..., Awaitable[Engine]]) -> StartRbac:
    """``engine = await start_rbac(**rbac_settings)``: an engine with the RBAC listener on an ephemeral port."""

    async def start(**rbac: Any) -> Engine:
        settings = {
            "auth_function_id": AUTH,
            "middleware_function_id": MIDDLEWARE,
            "on_function_registration_function_id": ON_FUNCTION,
            "on_trigger_registration_function_id": ON_TRIGGER,
            "on_trigger_type_registration_function_id": ON_TRIGGER_TYPE,
            "expose_functions": EXPOSE,
            **rbac,
        }
        settings = {key: value for key, value in settings.items() if value is not None}
        return await start_engine(http_port=-1, rbac_port=0, module_settings={"rbac": settings})

    return start


def engine_url(engine: Engine) -> str:
    return f"ws://127.0.0.1:{engine.port}"


def rbac_url(engine: Engine) -> str:
    assert engine.rbac is not None
    return engine.rbac.url


@contextmanager
def trusted_worker(engine: Engine, with_hooks: bool = True) -> Iterator[Trusted]:
    with register_worker(engine_url(engine), InitOptions(worker_name="trusted")) as client:
        trusted = Trusted(client)
        trusted.serve(with_hooks)
        yield trusted


@asynccontextmanager
async def trusted_running(engine: Engine, with_hooks: bool = True) -> AsyncIterator[Trusted]:
    """:func:`trusted_worker` for a test on the engine's loop: the SDK's blocking calls run in a thread."""
    client = await asyncio.to_thread(register_worker, engine_url(engine), InitOptions(worker_name="trusted"))
    try:
        trusted = Trusted(client)
        await asyncio.to_thread(trusted.serve, with_hooks)
        yield trusted
    finally:
        await asyncio.to_thread(client.shutdown)


def rbac_worker(engine: Engine, token: str | None, name: str = "partner", **options: Any) -> III:
    headers = {"x-token": token} if token is not None else {}
    return register_worker(rbac_url(engine), InitOptions(worker_name=name, headers=headers, **options))


ENGINE_LOGGERS = ("iii.engine", "iii.modules", "picows.iii.engine")
"""The engine's loggers (the test's own clients log what they send at DEBUG, headers included)."""


def engine_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() for record in caplog.records if record.name.startswith(ENGINE_LOGGERS))


def listed(client: III) -> list[str]:
    rows = client.trigger({"function_id": "engine::functions::list", "payload": {"include_internal": True}})
    return [row["function_id"] for row in rows["functions"]]


def failure(client: III, function_id: str, payload: Any = None) -> InvocationError:
    with pytest.raises(InvocationError) as caught:
        client.trigger({"function_id": function_id, "payload": payload if payload is not None else {}})
    return caught.value


async def test_a_worker_admitted_by_the_auth_function_calls_through_the_middleware(
    start_rbac: StartRbac, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await start_rbac()

    def scenario() -> dict[str, Any]:
        with trusted_worker(engine) as trusted:
            url = f"{rbac_url(engine)}/?tenant=acme&tenant=beta"
            with register_worker(url, InitOptions(worker_name="partner", headers={"X-Token": TOKEN})) as partner:
                result = partner.trigger(
                    {"function_id": "api::echo", "payload": {"n": 1, "_caller_worker_id": "forged-id"}}
                )
                return {"result": result, "trusted": trusted, "partner_id": partner.worker_id}

    with caplog.at_level(logging.DEBUG):
        seen = await asyncio.to_thread(scenario)
    trusted: Trusted = seen["trusted"]
    [auth_input] = trusted.auth_inputs
    assert auth_input["headers"]["x-token"] == TOKEN  # names in lower case, values as sent
    assert auth_input["query_params"] == {"tenant": ["acme", "beta"]}
    assert auth_input["ip_address"] == "127.0.0.1"
    [middleware_input] = trusted.middleware_inputs
    assert middleware_input == {
        "function_id": "api::echo",
        # the engine's caller id, not the one the worker wrote
        "payload": {"n": 1, "_caller_worker_id": seen["partner_id"]},
        "action": None,
        "context": {"user": "u1"},
    }
    # The middleware's answer is the caller's: the target was called by the middleware, with what it added.
    assert seen["result"] == {"function": "api::echo", "data": {"n": 1, "via": "middleware", "user": "u1"}}
    logged = engine_log(caplog)
    assert "admitted on the rbac port" in logged
    assert TOKEN not in logged


async def test_only_exposed_and_allowed_functions_are_callable_and_listed(start_rbac: StartRbac) -> None:
    engine = await start_rbac(middleware_function_id=None)

    def scenario() -> dict[str, Any]:
        found: dict[str, Any] = {}
        with trusted_worker(engine) as trusted, rbac_worker(engine, TOKEN) as partner:
            own = partner.register_function("mine::echo", lambda data: {"mine": data})
            assert own.wait_active(5)
            found["listed"] = listed(partner)
            found["calls"] = {
                function_id: partner.trigger({"function_id": function_id, "payload": {}})["function"]
                for function_id in ["api::echo", "svc::allowed", "tagged::public"]
            }
            found["own"] = partner.trigger({"function_id": "mine::echo", "payload": {"x": 1}})
            found["refused"] = {
                function_id: failure(partner, function_id)
                for function_id in ["internal::secret", "tagged::almost", "no::such::function", AUTH]
            }
            info = partner.trigger(
                {"function_id": "engine::functions::info", "payload": {"function_ids": ["api::echo", "internal::x"]}}
            )
            found["info"] = [row.get("error", "detail") for row in info["functions"]]
            found["info_single"] = failure(partner, "engine::functions::info", {"function_id": "internal::secret"})
            found["workers_list"] = failure(partner, "engine::workers::list")
            found["trusted_called"] = list(trusted.called)
        return found

    found = await asyncio.to_thread(scenario)
    assert found["calls"] == {name: name for name in ["api::echo", "svc::allowed", "tagged::public"]}
    assert found["own"] == {"mine": {"x": 1}}  # a worker may always call its own functions
    for function_id, error in found["refused"].items():
        # The same answer whether the function exists or not: a refusal tells nothing.
        assert error.code == "FORBIDDEN", function_id
        assert function_id in error.message and "rbac.expose_functions" in error.message
    assert found["trusted_called"] == ["api::echo", "svc::allowed", "tagged::public"]  # refused calls reach no one
    listing = found["listed"]
    assert {"api::echo", "svc::allowed", "tagged::public", "mine::echo", "engine::functions::list"} <= set(listing)
    assert not {"internal::secret", "tagged::almost", AUTH, MIDDLEWARE, "engine::workers::list"} & set(listing)
    assert found["info"] == ["detail", "forbidden"]
    assert found["info_single"].code == "FORBIDDEN"
    assert found["workers_list"].code == "FORBIDDEN"


async def test_forbidden_functions_win_and_the_ordinary_port_is_unaffected(start_rbac: StartRbac) -> None:
    engine = await start_rbac()

    def scenario() -> dict[str, Any]:
        with trusted_worker(engine) as trusted:
            with rbac_worker(engine, "restricted-token") as restricted:
                forbidden = failure(restricted, "api::echo")
            with register_worker(engine_url(engine), InitOptions(worker_name="ordinary")) as ordinary:
                secret = ordinary.trigger({"function_id": "internal::secret", "payload": {"n": 2}})
                everything = listed(ordinary)
            return {"forbidden": forbidden, "secret": secret, "listed": everything, "auths": len(trusted.auth_inputs)}

    found = await asyncio.to_thread(scenario)
    assert found["forbidden"].code == "FORBIDDEN"
    assert "forbidden_functions" in found["forbidden"].message
    assert found["secret"] == {"function": "internal::secret", "data": {"n": 2}}  # no middleware, no policy
    assert {"internal::secret", AUTH, "tagged::almost"} <= set(found["listed"])
    assert found["auths"] == 1  # the ordinary worker was not asked about


async def test_registrations_pass_the_hooks_and_the_prefix(start_rbac: StartRbac) -> None:
    engine = await start_rbac()

    def scenario() -> dict[str, Any]:
        found: dict[str, Any] = {}
        with trusted_worker(engine) as trusted:
            with rbac_worker(engine, "partner-token") as partner:
                echo = partner.register_function("echo", lambda data: {"echoed": data})
                renamed = partner.register_function("rename::me", lambda data: {"renamed": data})
                denied = partner.register_function("denied::fn", lambda data: None)
                found["statuses"] = [
                    echo.wait_status("active", "refused", timeout_s=5),
                    renamed.wait_status("active", "refused", timeout_s=5),
                    denied.wait_status("active", "refused", timeout_s=5),
                ]
                # Trusted callers use the engine's ids; the worker serves under its own.
                found["echo"] = trusted.client.trigger({"function_id": "partner::echo", "payload": {"n": 1}})
                found["renamed"] = trusted.client.trigger({"function_id": "partner::renamed::me", "payload": {}})
                found["listed"] = [name for name in listed(trusted.client) if "::" in name]
                partner.register_trigger(
                    {"type": "cron", "function_id": "echo", "config": {"expression": "0 0 0 1 1 * 2099"}}
                )
                partner.register_trigger({"type": "cron", "function_id": "denied::fn", "config": {"expression": "x"}})
                listed(partner)  # answered after the registrations before it on the socket were handled
                bindings = trusted.client.trigger(
                    {"function_id": "engine::registered-triggers::list", "payload": {"trigger_type": "cron"}}
                )
                found["bindings"] = bindings["registered_triggers"]
                echo.unregister()
                listed(partner)
                found["after_unregister"] = "partner::echo" in listed(trusted.client)
            found["hooks"] = list(trusted.hook_inputs)
        return found

    found = await asyncio.to_thread(scenario)
    assert found["statuses"] == ["active", "active", "refused"]
    assert found["echo"] == {"echoed": {"n": 1}}
    assert found["renamed"] == {"renamed": {}}
    assert "partner::echo" in found["listed"] and "partner::renamed::me" in found["listed"]
    assert "echo" not in found["listed"] and "denied::fn" not in found["listed"]
    function_hooks = [data for hook, data in found["hooks"] if hook == ON_FUNCTION]
    assert [data["function_id"] for data in function_hooks] == ["echo", "rename::me", "denied::fn"]  # before the prefix
    assert function_hooks[0]["context"] == {"user": "p"}
    [binding] = found["bindings"]
    assert binding["function_id"] == "partner::echo"  # the prefix applies to what a trigger binds
    assert binding["config"] == {"expression": "0 0 0 1 1 * 2099", "checked": True}  # rewritten by the hook
    assert not found["after_unregister"]


async def test_trigger_and_trigger_type_registrations_are_checked(start_rbac: StartRbac) -> None:
    engine = await start_rbac()

    def scenario() -> dict[str, Any]:
        found: dict[str, Any] = {}
        with trusted_worker(engine) as trusted:
            with rbac_worker(engine, TOKEN) as admin, rbac_worker(engine, "no-registrations", "limited") as limited:
                ref = limited.register_function("x::y", lambda data: None)
                found["limited_function"] = ref.wait_status("active", "refused", timeout_s=5)
                admin.register_trigger_type({"id": "admin::type", "description": "ok"}, _NoopHandler())
                admin.register_trigger_type({"id": "denied::type", "description": "no"}, _NoopHandler())
                admin.register_trigger_type({"id": "cron", "description": "take over cron"}, _NoopHandler())
                limited.register_trigger_type({"id": "limited::type"}, _NoopHandler())
                # A binding to a function nobody exposes, one to the engine's own trigger type, one of a type the
                # auth function does not allow: all refused.
                admin.register_trigger({"type": "cron", "function_id": "internal::secret", "config": {}})
                admin.register_trigger({"type": "engine::functions-available", "function_id": "api::echo"})
                limited.register_trigger({"type": "subscribe", "function_id": "api::echo", "config": {"topic": "t"}})
                admin.trigger({"function_id": "api::echo", "payload": {}})  # sent after them: they were handled
                limited.trigger({"function_id": "api::echo", "payload": {}})
                types = trusted.client.trigger({"function_id": "engine::triggers::list", "payload": {}})
                found["types"] = sorted(row["id"] for row in types["triggers"])
                bindings = trusted.client.trigger({"function_id": "engine::registered-triggers::list", "payload": {}})
                found["bindings"] = [row["function_id"] for row in bindings["registered_triggers"]]
            found["hooks"] = [(hook, data.get("trigger_type_id")) for hook, data in trusted.hook_inputs]
        return found

    found = await asyncio.to_thread(scenario)
    assert found["limited_function"] == "refused"
    assert "admin::type" in found["types"]
    assert "denied::type" not in found["types"] and "limited::type" not in found["types"]
    assert found["bindings"] == []
    assert (ON_TRIGGER_TYPE, "admin::type") in found["hooks"] and (ON_TRIGGER_TYPE, "denied::type") in found["hooks"]
    assert (ON_TRIGGER_TYPE, "limited::type") not in found["hooks"]  # refused before its hook


class _NoopHandler:
    async def register_trigger(self, config: Any) -> None:
        pass

    async def unregister_trigger(self, config: Any) -> None:
        pass


async def test_a_worker_never_stands_by_for_a_trusted_workers_function(start_rbac: StartRbac) -> None:
    """Standing by would hand it the function when the trusted worker withdraws it (or leaves)."""
    engine = await start_rbac(middleware_function_id=None)

    def scenario() -> dict[str, Any]:
        with trusted_worker(engine) as trusted, rbac_worker(engine, TOKEN) as partner:
            taken = partner.register_function("api::echo", lambda data: {"hijacked": True})
            status = taken.wait_status("active", "standby", "refused", timeout_s=5)
            owner_before = _owner_of(trusted.client, "api::echo")
            trusted.refs["api::echo"].unregister()
            gone = failure(trusted.client, "api::echo")  # sent after the unregister, on the same socket
            return {
                "status": status,
                "before": owner_before,
                "after": _owner_of(trusted.client, "api::echo"),
                "gone": gone,
            }

    found = await asyncio.to_thread(scenario)
    assert found["status"] == "refused"
    assert found["before"] == "trusted"
    assert found["after"] is None
    assert found["gone"].code == "function_not_found"


def _owner_of(client: III, function_id: str) -> str | None:
    rows = client.trigger({"function_id": "engine::functions::list", "payload": {}})["functions"]
    return next((row["worker_name"] for row in rows if row["function_id"] == function_id), None)


async def test_a_failing_middleware_fails_the_call_with_its_error(start_rbac: StartRbac) -> None:
    engine = await start_rbac()

    def scenario() -> tuple[InvocationError, InvocationError, list[str]]:
        with trusted_worker(engine) as trusted, rbac_worker(engine, TOKEN) as partner:
            denied = failure(partner, "api::echo", {"deny": True})
            trusted.refs[MIDDLEWARE].unregister()
            missing = failure(partner, "api::echo", {})
            return denied, missing, list(trusted.called)

    denied, missing, called = await asyncio.to_thread(scenario)
    assert denied.code == "invocation_failed"
    assert denied.message.startswith(f"middleware {MIDDLEWARE}: ") and "the middleware says no" in denied.message
    assert missing.code == "function_not_found" and MIDDLEWARE in missing.message
    assert called == []  # neither call reached its function


async def refusal(engine: Engine, headers: dict[str, str]) -> tuple[dict[str, Any], int | None, str]:
    """What a raw worker of the RBAC port gets when it is refused: the ``error`` message, the close code and
    reason (and no ``workerregistered``)."""
    ws = await connect_raw(rbac_url(engine), additional_headers=headers)
    notice = json.loads(await asyncio.wait_for(ws.recv(), 10))
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code is not None
    return notice, ws.close_code, ws.close_reason or ""


async def test_a_refused_worker_is_told_why_and_its_credentials_stay_out_of_the_log(
    start_rbac: StartRbac, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await start_rbac()
    wrong = "Wrong-Token-0815"

    def ours() -> float:
        started = time.monotonic()
        with pytest.raises(EngineRefusedError, match="AUTH_ERROR"):
            rbac_worker(engine, wrong, connect_timeout_s=10)
        return time.monotonic() - started

    with caplog.at_level(logging.DEBUG):
        async with trusted_running(engine) as trusted:
            notice, code, reason = await refusal(engine, {"x-token": wrong})
            malformed = await refusal(engine, {"x-token": "not-an-auth-result"})
            took = await asyncio.to_thread(ours)
            connected = set(engine.core.workers)
    assert notice["type"] == "error" and notice["error"]["code"] == "AUTH_ERROR"
    # The auth function's own words, without the credential it repeated.
    assert "unknown token <redacted>" in notice["error"]["message"]
    assert code == 1008 and reason.startswith("AUTH_ERROR: ")
    assert malformed[1] == 1008 and "allowed_functions must be a list of strings" in malformed[0]["error"]["message"]
    assert took < 5  # refused at once, not retried until the connect timeout
    assert len(trusted.auth_inputs) == 3
    logged = engine_log(caplog)
    assert "refused a worker from 127.0.0.1: unknown token <redacted>" in logged
    assert wrong not in logged and TOKEN not in logged
    assert connected == {trusted.client.worker_id}  # no refused worker ever reached the core


async def test_without_an_auth_function_to_ask_a_worker_is_told_to_try_again(
    start_rbac: StartRbac, caplog: pytest.LogCaptureFixture
) -> None:
    """Missing, too slow: the refusal fails closed, and says nothing about the worker (close code 1013)."""
    engine = await start_rbac(auth_timeout_s=0.5)
    missing = await refusal(engine, {"x-token": TOKEN})

    def ours() -> str:
        with pytest.raises(EngineUnavailableError) as caught:
            rbac_worker(engine, TOKEN, connect_timeout_s=1)
        return str(caught.value)

    our_error = await asyncio.to_thread(ours)
    async with trusted_running(engine):
        slow = await refusal(engine, {"x-token": "slow"})
    for notice, code, reason in (missing, slow):
        assert notice["error"] == {
            "code": "AUTH_ERROR",
            "message": "the engine cannot authenticate workers now; try again later",
        }
        assert code == 1013 and reason.startswith("AUTH_ERROR")
    assert "1013: AUTH_ERROR" in our_error  # our SDK retried, and says why the last attempt failed
    assert f"auth function {AUTH} could not be called" in caplog.text
    assert "function_not_found" in caplog.text and "TIMEOUT" in caplog.text


async def test_what_a_worker_sends_before_it_is_admitted_waits_in_order(start_rbac: StartRbac) -> None:
    engine = await start_rbac(middleware_function_id=None)
    async with trusted_running(engine) as trusted:
        trusted.auth_gate.clear()
        ws = await connect_raw(rbac_url(engine), additional_headers={"x-token": TOKEN})
        await ws.send(json.dumps({"type": "registerfunction", "id": "early::fn"}))
        await ws.send(json.dumps({"type": "invokefunction", "invocation_id": "c1", "function_id": "api::echo"}))
        await ws.send(json.dumps({"type": "invokefunction", "invocation_id": "c2", "function_id": "early::fn"}))
        with pytest.raises(TimeoutError):  # nothing is answered, nor announced, until the auth function answers
            await asyncio.wait_for(ws.recv(), 0.3)
        trusted.auth_gate.set()
        received = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(4)]
        await ws.close()
    assert [message["type"] for message in received] == [
        "workerregistered",
        "functionactivated",  # the registration first, so the call of it after it finds it
        "invokefunction",
        "invocationresult",
    ]
    assert received[2]["function_id"] == "early::fn"
    assert received[3]["invocation_id"] == "c1"


async def test_a_worker_that_floods_before_admission_is_disconnected(
    start_engine: Callable[..., Awaitable[Engine]],
) -> None:
    settings = {"auth_function_id": AUTH}
    engine = await start_engine(
        http_port=-1, rbac_port=0, max_message_bytes=64 * 1024, module_settings={"rbac": settings}
    )
    async with trusted_running(engine, with_hooks=False) as trusted:
        trusted.auth_gate.clear()
        ws = await connect_raw(rbac_url(engine), additional_headers={"x-token": TOKEN})
        big = json.dumps({"type": "ping", "padding": "x" * 30_000})
        for _ in range(3):
            await ws.send(big)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        trusted.auth_gate.set()
    assert ws.close_code == 1008 and "too many messages waiting" in (ws.close_reason or "")


async def test_without_an_auth_function_every_worker_is_admitted_with_a_warning(
    start_rbac: StartRbac, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await start_rbac(auth_function_id=None, middleware_function_id=None)
    assert "no auth_function_id in [rbac]" in caplog.text
    async with trusted_running(engine):
        worker = await RawWorker.connect(rbac_url(engine))
        echo = await worker.call("api::echo", {"n": 1})
        secret = await worker.call("internal::secret")
        await worker.send({"type": "reattach", "previous_worker_id": "x", "reattach_token": "y"})
        notice = await worker.recv_type("error")
        await worker.ws.close()
    assert echo["result"] == {"function": "api::echo", "data": {"n": 1}}
    assert secret["error"]["code"] == "FORBIDDEN"  # expose_functions still applies
    assert notice["error"]["code"] == "not_supported" and "reattach" in notice["error"]["message"]


async def test_channels_work_through_the_rbac_port(start_rbac: StartRbac) -> None:
    """An SDK connected to the RBAC port opens its channels there (engine::channels::create is infrastructure)."""
    engine = await start_rbac(middleware_function_id=None)

    def scenario() -> Any:
        with trusted_worker(engine) as trusted, rbac_worker(engine, TOKEN) as partner:
            ref = trusted.client.register_function("api::size", lambda data: len(data["reader"].read_all()))
            assert ref.wait_active(5)
            channel = partner.create_channel()
            channel.writer.write(b"x" * 100_000)
            channel.writer.close()
            return partner.trigger({"function_id": "api::size", "payload": {"reader": channel.reader_ref}})

    assert await asyncio.to_thread(scenario) == 100_000


async def test_observe_is_not_offered_on_the_rbac_port(start_rbac: StartRbac) -> None:
    """What observing means for an untrusted worker (its calls pass a policy, its functions may be renamed) is not
    decided: the RBAC port does not offer observe.v1, sends nothing of it, and refuses its messages."""
    engine = await start_rbac(auth_function_id=None, middleware_function_id=None)
    async with trusted_running(engine):
        worker = await RawWorker.connect(rbac_url(engine))
        assert "observe.v1" not in worker.first_message["features"]
        declare = {"name": "untrusted", "features": ["observe.v1", "local-dispatch.v1"]}
        await worker.invoke("engine::workers::register", declare, action={"type": "void"})
        await worker.send({"type": "registerfunction", "id": "api::mine"})
        await worker.send({"type": "ping"})
        assert [(await worker.recv())["type"] for _ in range(2)] == ["functionactivated", "pong"]
        observe = {
            "type": "observe",
            "id": "o1",
            "source": {"function_id": "api::echo"},
            "target": {"function_id": "api::mine"},
        }
        await worker.send(observe)
        notice = await worker.recv_type("error")
        await worker.ws.close()
    assert notice["error"]["code"] == "not_supported" and "observe" in notice["error"]["message"]
