"""Function kinds: a worker registers a function with a field (``invocation``) that a module serves for it.

The core asks the module's kind to accept each such registration; the function is then served inside the
engine by the module's handler, while the registering worker owns it (listings, unregister, disconnect,
standbys). Workers are the recording stand-ins of ``test_core``.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from iii.engine.core import Core
from iii.engine.introspection import function_summaries
from iii.engine.module_host import InProcessHost
from iii.modules.api import CallInfo, FunctionError, FunctionRegistration, Handler
from iii.protocol.messages import InvokeFunction, RegisterFunction, UnregisterFunction
from tests.engine.test_core import connect, core, raw

__all__ = ["core"]  # the fixture


class Kind:
    """Accepts ``{"url": ...}`` unless the url is ``bad``; its handler answers with the url and the call."""

    def __init__(self) -> None:
        self.accepted: list[FunctionRegistration] = []

    def accept(self, registration: FunctionRegistration) -> Handler:
        url = registration.config.get("url")
        if url == "bad":
            raise FunctionError("url_validation_failed", "URL not in allowlist: bad")
        if url == "crash":
            raise RuntimeError("the module's own bug")
        self.accepted.append(registration)

        def serve(data: Any, call: CallInfo) -> Any:
            return {"url": url, "data": data, "caller": call.worker_id}

        return serve


def registration(function_id: str, url: str, **fields: Any) -> RegisterFunction:
    return RegisterFunction(id=function_id, invocation=raw({"url": url}), **fields)


def call(core: Core, caller: Any, function_id: str, data: Any = None) -> dict[str, Any]:
    """Invoke ``function_id`` as ``caller`` and return the answer (the kinds' handlers answer at once)."""
    invocation_id = f"c-{len(caller.of_type('invocationresult'))}"
    core.on_worker_message(caller, InvokeFunction(function_id=function_id, invocation_id=invocation_id, data=raw(data)))
    answer: dict[str, Any] = caller.of_type("invocationresult")[-1]
    assert answer["invocation_id"] == invocation_id
    return answer


@pytest.fixture
def kind(core: Core) -> Kind:
    kind = Kind()
    InProcessHost(core, "hooks").provide_function_kind("invocation", kind)
    return kind


def test_the_module_serves_the_function_and_the_worker_owns_it(core: Core, kind: Kind) -> None:
    owner, caller = connect(core, "owner"), connect(core, "caller")
    meta = raw({"team": "a"})
    core.on_worker_message(owner, registration("ext::hook", "https://x", description="a hook", metadata=meta))
    assert owner.of_type("functionactivated") == [{"type": "functionactivated", "function_id": "ext::hook"}]
    assert kind.accepted == [
        FunctionRegistration("ext::hook", {"url": "https://x"}, "owner", description="a hook", metadata={"team": "a"})
    ]

    answer = call(core, caller, "ext::hook", {"n": 1})
    assert answer["result"] == {"url": "https://x", "data": {"n": 1, "_caller_worker_id": "caller"}, "caller": "caller"}
    assert owner.of_type("invokefunction") == []  # served inside the engine, not sent to its owner

    [row] = [row for row in function_summaries(core) if row["function_id"] == "ext::hook"]
    assert (row["worker_name"], row["worker_id"], row["description"]) == ("owner", "owner", "a hook")

    core.on_worker_message(owner, UnregisterFunction(id="ext::hook"))
    assert call(core, caller, "ext::hook")["error"]["code"] == "function_not_found"


def test_its_workers_disconnect_removes_it_and_a_standby_takes_over(core: Core, kind: Kind) -> None:
    first, second, caller = connect(core, "first"), connect(core, "second"), connect(core, "caller")
    core.on_worker_message(first, registration("ext::hook", "https://first"))
    core.on_worker_message(second, registration("ext::hook", "https://second"))
    [rejected] = second.of_type("registrationrejected")
    assert rejected["owner_worker_id"] == "first"
    assert call(core, caller, "ext::hook")["result"]["url"] == "https://first"

    core.on_worker_disconnected(first)
    assert second.of_type("functionactivated") == [{"type": "functionactivated", "function_id": "ext::hook"}]
    assert call(core, caller, "ext::hook")["result"]["url"] == "https://second"
    core.on_worker_disconnected(second)
    assert call(core, caller, "ext::hook")["error"]["code"] == "function_not_found"


def test_a_refused_registration_is_told_to_its_worker_and_loses_nothing(
    core: Core, kind: Kind, caplog: pytest.LogCaptureFixture
) -> None:
    owner, caller = connect(core, "owner"), connect(core, "caller")
    core.on_worker_message(owner, registration("ext::never", "bad"))
    [notice] = owner.of_type("error")
    assert notice == {
        "type": "error",
        "code": "url_validation_failed",
        "message": "URL not in allowlist: bad",
        "function_id": "ext::never",
    }
    assert owner.of_type("functionactivated") == []
    assert call(core, caller, "ext::never")["error"]["code"] == "function_not_found"

    core.on_worker_message(owner, registration("ext::hook", "https://good"))
    core.on_worker_message(owner, registration("ext::hook", "bad"))  # a new config it refuses: the old one stays
    assert len(owner.of_type("error")) == 2
    assert call(core, caller, "ext::hook")["result"]["url"] == "https://good"

    with caplog.at_level(logging.ERROR, "iii.engine"):
        core.on_worker_message(owner, registration("ext::crash", "crash"))
    assert owner.of_type("error")[-1]["code"] == "invocation_failed"
    assert "the module's own bug" in caplog.text  # in the log, not in what the worker is told
    assert "own bug" not in owner.of_type("error")[-1]["message"]


def test_a_worker_turns_its_function_into_one_of_the_kind_and_back(core: Core, kind: Kind) -> None:
    owner, caller = connect(core, "owner"), connect(core, "caller")
    core.on_worker_message(owner, RegisterFunction(id="svc::f"))
    core.on_worker_message(owner, registration("svc::f", "https://x"))
    assert call(core, caller, "svc::f")["result"]["url"] == "https://x"
    core.on_worker_message(owner, RegisterFunction(id="svc::f"))
    core.on_worker_message(caller, InvokeFunction(function_id="svc::f", invocation_id="routed", data=raw(None)))
    [delivery] = owner.of_type("invokefunction")
    assert delivery["function_id"] == "svc::f"


def test_without_a_module_for_the_kind_the_registration_is_refused(core: Core) -> None:
    owner, caller = connect(core, "owner"), connect(core, "caller")
    core.on_worker_message(owner, registration("ext::hook", "https://x"))
    [notice] = owner.of_type("error")
    assert (notice["code"], notice["function_id"]) == ("not_supported", "ext::hook")
    assert "invocation" in notice["message"]
    assert call(core, caller, "ext::hook")["error"]["code"] == "function_not_found"


def test_a_kind_is_provided_once_and_only_for_a_registration_field(core: Core, kind: Kind) -> None:
    with pytest.raises(ValueError, match="served by module hooks"):
        InProcessHost(core, "other").provide_function_kind("invocation", Kind())
    with pytest.raises(ValueError, match="not a registerfunction field"):
        InProcessHost(core, "other").provide_function_kind("description", Kind())
