"""The rbac module without an engine (on :class:`~tests.modules.local_host.LocalHost`): admission by the auth
function, the registration hooks, the prefix and the middleware, as the engine's session asks them."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import pytest

from iii.modules.api import (
    AdmissionError,
    FunctionDeclaration,
    FunctionError,
    InterceptedCall,
    TriggerDeclaration,
    TriggerTypeDeclaration,
    WorkerRequest,
)
from iii.modules.rbac import RbacModule, RbacSettings
from iii.modules.rbac.policy import RbacPolicy
from tests.modules.conftest import RunModule
from tests.modules.local_host import LocalHost

AUTH = "auth"
HOOK = "hook"
REQUEST = WorkerRequest({"authorization": "Bearer Tok-123456"}, {"key": ["Query-Secret"]}, "10.1.2.3")


async def started(run_module: RunModule, **settings: Any) -> tuple[RbacModule, LocalHost]:
    module = RbacModule(RbacSettings(**settings))
    host = await run_module(module)
    return module, host


async def admit(host: LocalHost, request: WorkerRequest = REQUEST) -> RbacPolicy:
    assert host.gate is not None
    policy = await host.gate.admit(request)
    assert isinstance(policy, RbacPolicy)
    return policy


async def refusal(host: LocalHost) -> AdmissionError:
    with pytest.raises(AdmissionError) as caught:
        await admit(host)
    return caught.value


async def resolved(outcome: Any) -> Any:
    return await outcome if inspect.isawaitable(outcome) else outcome


async def test_the_auth_function_gets_the_request_and_its_answer_is_the_policy(run_module: RunModule) -> None:
    module, host = await started(run_module, auth_function_id=AUTH)
    host.serve(AUTH, lambda data: {"allowed_functions": ["a::b"], "context": {"user": data["ip_address"]}})
    policy = await admit(host)
    assert host.invocations == [
        (
            AUTH,
            {
                "headers": {"authorization": "Bearer Tok-123456"},
                "query_params": {"key": ["Query-Secret"]},
                "ip_address": "10.1.2.3",
            },
        )
    ]
    assert policy.grants.allowed_functions == frozenset({"a::b"})
    assert policy.grants.context == {"user": "10.1.2.3"}
    assert module.admissions == {"admitted": 1}


async def test_admission_fails_closed(run_module: RunModule, caplog: pytest.LogCaptureFixture) -> None:
    module, host = await started(run_module, auth_function_id=AUTH)
    missing = await refusal(host)
    assert missing.temporary and missing.code == "AUTH_ERROR"

    def raising(data: Any) -> Any:
        raise ValueError("bad credentials Tok-123456 and Query-Secret")

    host.serve(AUTH, raising)
    raised = await refusal(host)
    assert not raised.temporary
    assert raised.message.endswith("bad credentials <redacted> and <redacted>")
    for answer, problem in [(None, "answered no result"), ([1], "must be an object"), ({"context": 1}, "context")]:
        host.serve(AUTH, lambda data, answer=answer: answer)
        refused = await refusal(host)
        assert not refused.temporary and problem in refused.message
    assert module.admissions == {"unavailable": 1, "refused": 4}
    assert "Tok-123456" not in caplog.text and "Query-Secret" not in caplog.text


async def test_without_an_auth_function_a_worker_may_register_anything(
    run_module: RunModule, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        _, host = await started(run_module)
    assert "no auth_function_id" in caplog.text
    policy = await admit(host)
    assert policy.grants.allow_trigger_type_registration and policy.grants.allow_function_registration
    with pytest.raises(FunctionError, match=r"rbac\.expose_functions"):
        policy.check_call("anything", None)  # expose_functions still applies: it is empty


async def test_registrations_without_hooks_take_the_prefix_at_once(run_module: RunModule) -> None:
    _, host = await started(run_module, auth_function_id=AUTH)
    host.serve(AUTH, lambda data: {"function_registration_prefix": "p", "allowed_trigger_types": ["cron"]})
    policy = await admit(host)
    function = policy.function(FunctionDeclaration("echo", "d", {"m": 1}))
    assert function == FunctionDeclaration("p::echo", "d", {"m": 1})  # no hook: no waiting
    trigger = policy.trigger(TriggerDeclaration("t1", "cron", "echo", {"expression": "x"}))
    assert trigger == TriggerDeclaration("t1", "cron", "p::echo", {"expression": "x"})
    with pytest.raises(FunctionError, match="allowed_trigger_types"):
        policy.trigger(TriggerDeclaration("t2", "subscribe", "echo"))
    with pytest.raises(FunctionError, match="allow_trigger_type_registration"):
        policy.trigger_type(TriggerTypeDeclaration("my::type"))


async def test_hooks_rewrite_or_refuse(run_module: RunModule, caplog: pytest.LogCaptureFixture) -> None:
    _, host = await started(
        run_module,
        auth_function_id=AUTH,
        on_function_registration_function_id=HOOK,
        on_trigger_registration_function_id=HOOK,
        on_trigger_type_registration_function_id=HOOK,
    )
    host.serve(
        AUTH,
        lambda data: {
            "function_registration_prefix": "p",
            "allow_trigger_type_registration": True,
            "context": {"u": 1},
        },
    )
    policy = await admit(host)
    host.serve(HOOK, lambda data: {"function_id": "new", "description": None, "metadata": {"tag": 1}})
    assert await resolved(policy.function(FunctionDeclaration("old", "kept"))) == FunctionDeclaration(
        "p::new", "kept", {"tag": 1}
    )
    assert host.invocations[-1] == (
        HOOK,
        {"function_id": "old", "description": "kept", "metadata": None, "namespace": "default", "context": {"u": 1}},
    )
    host.serve(HOOK, lambda data: {"trigger_id": None, "trigger_type": None, "function_id": None, "config": None})
    declared = TriggerDeclaration("t1", "cron", "echo", {"expression": "x"}, {"meta": True})
    # Null keeps a field (the SDKs' result models dump every field), and the prefix still applies.
    assert await resolved(policy.trigger(declared)) == TriggerDeclaration(
        "t1", "cron", "p::echo", {"expression": "x"}, {"meta": True}
    )
    host.serve(HOOK, lambda data: {"trigger_type_id": "renamed", "description": "new words"})
    assert await resolved(policy.trigger_type(TriggerTypeDeclaration("t", "old"))) == TriggerTypeDeclaration(
        "renamed", "new words"
    )

    def deny(data: Any) -> Any:
        raise ValueError("not you")

    host.serve(HOOK, deny)
    with pytest.raises(FunctionError, match=r"refused by hook: .*not you"):
        await resolved(policy.function(FunctionDeclaration("x")))
    for answer in ([], {"function_id": 5}, {"function_id": ""}):
        host.serve(HOOK, lambda data, answer=answer: answer)
        with pytest.raises(FunctionError) as caught:
            await resolved(policy.function(FunctionDeclaration("x")))
        assert caught.value.code == "FORBIDDEN"
    del host.served[HOOK]
    with caplog.at_level(logging.WARNING), pytest.raises(FunctionError, match="could not be called"):
        await resolved(policy.trigger_type(TriggerTypeDeclaration("t")))
    assert "hook hook could not be called for trigger type t: function_not_found: refused" in caplog.text


async def test_the_middleware_answers_calls_but_not_the_engines_own(run_module: RunModule) -> None:
    _, host = await started(run_module, auth_function_id=AUTH, middleware_function_id="mw")
    host.serve(AUTH, lambda data: {"context": {"user": "u"}})
    policy = await admit(host)
    host.serve("mw", lambda data: {"middleware saw": data})
    call = InterceptedCall("api::x", {"n": 1}, action={"type": "void"}, metadata={"m": 1})
    pending = policy.intercept(call)
    assert pending is not None
    assert await pending == {
        "middleware saw": {
            "function_id": "api::x",
            "payload": {"n": 1},
            "action": {"type": "void"},
            "context": {"user": "u"},
        }
    }
    assert policy.intercept(InterceptedCall("engine::functions::list", {}, engine_builtin=True)) is None
    del host.served["mw"]
    with pytest.raises(FunctionError) as caught:
        await policy.intercept(call)  # type: ignore[misc]
    assert caught.value.code == "function_not_found" and caught.value.message.startswith("middleware mw: ")
