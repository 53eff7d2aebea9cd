"""Worker-provided trigger types: bindings parked, delivered, re-delivered, refused and removed."""

from __future__ import annotations

import json
import logging

import pytest

from iii.engine import Engine
from tests.engine.wire import RawWorker, eventually

TYPE = "test.webhook"


def binding(binding_id: str, function_id: str = "hooks.on_push") -> dict[str, object]:
    return {
        "type": "registertrigger",
        "id": binding_id,
        "trigger_type": TYPE,
        "function_id": function_id,
        "config": {"path": "/gh"},
        "metadata": {"team": "a"},
    }


async def test_a_binding_waits_for_a_provider_and_is_delivered_when_one_registers(live_engine: Engine) -> None:
    consumer = await RawWorker.connect(live_engine.url)
    await consumer.send(binding("b-1"))
    await consumer.ping()  # parked: nothing to deliver yet
    provider = await RawWorker.connect(live_engine.url)
    await provider.send({"type": "registertriggertype", "id": TYPE, "description": "hooks"})
    delivered = await provider.recv_type("registertrigger")
    assert delivered == {
        "type": "registertrigger",
        "id": "b-1",
        "trigger_type": TYPE,
        "function_id": "hooks.on_push",
        "config": {"path": "/gh"},
        "metadata": {"team": "a"},
    }
    # Bindings made while the provider is there are delivered at once.
    await consumer.send(binding("b-2", "hooks.other"))
    assert (await provider.recv_type("registertrigger"))["id"] == "b-2"


async def test_a_returning_provider_gets_the_same_bindings_again(live_engine: Engine) -> None:
    consumer = await RawWorker.connect(live_engine.url)
    await consumer.send(binding("b-1"))
    await consumer.ping()
    first = await RawWorker.connect(live_engine.url)
    await first.send({"type": "registertriggertype", "id": TYPE, "description": ""})
    assert (await first.recv_type("registertrigger"))["id"] == "b-1"
    await first.close()
    second = await RawWorker.connect(live_engine.url)
    await second.send({"type": "registertriggertype", "id": TYPE, "description": ""})
    again = await second.recv_type("registertrigger")
    assert (again["id"], again["config"]) == ("b-1", {"path": "/gh"})


async def test_unbinding_and_leaving_are_told_to_the_provider(live_engine: Engine) -> None:
    provider = await RawWorker.connect(live_engine.url)
    await provider.send({"type": "registertriggertype", "id": TYPE, "description": ""})
    await provider.ping()
    consumer = await RawWorker.connect(live_engine.url)
    await consumer.send(binding("b-1"))
    await consumer.send(binding("b-2"))
    await provider.recv_type("registertrigger")
    await provider.recv_type("registertrigger")
    stranger = await RawWorker.connect(live_engine.url)
    await stranger.send({"type": "unregistertrigger", "id": "b-1"})  # not the stranger's binding
    await stranger.ping()
    await consumer.send({"type": "unregistertrigger", "id": "b-1", "trigger_type": TYPE})
    assert await provider.recv_type("unregistertrigger") == {
        "type": "unregistertrigger",
        "id": "b-1",
        "trigger_type": TYPE,
    }
    await consumer.close()
    assert (await provider.recv_type("unregistertrigger"))["id"] == "b-2"


async def test_a_providers_refusal_reaches_the_binding_worker_and_others_are_ignored(live_engine: Engine) -> None:
    provider = await RawWorker.connect(live_engine.url)
    await provider.send({"type": "registertriggertype", "id": TYPE, "description": ""})
    await provider.ping()
    consumer = await RawWorker.connect(live_engine.url)
    await consumer.send(binding("b-1"))
    await provider.recv_type("registertrigger")
    error = {"code": "trigger_registration_failed", "message": "bad path"}
    impostor = await RawWorker.connect(live_engine.url)
    await impostor.send({"type": "triggerregistrationresult", "id": "b-1", "error": error})
    await impostor.ping()
    await provider.send({"type": "triggerregistrationresult", "id": "b-1", "trigger_type": TYPE})  # success: no-op
    await provider.send({"type": "triggerregistrationresult", "id": "b-1", "trigger_type": TYPE, "error": error})
    refusal = await consumer.recv_type("triggerregistrationresult")
    assert refusal == {
        "type": "triggerregistrationresult",
        "id": "b-1",
        "trigger_type": TYPE,
        "function_id": "hooks.on_push",
        "error": error,
    }
    (listed,) = (await consumer.result_of("engine::registered-triggers::list", {}))["registered_triggers"]
    assert (listed["status"], listed["error"]) == ("refused", "bad path")
    # A refused binding is parked: the provider is not told when it goes away.
    await consumer.send({"type": "unregistertrigger", "id": "b-1"})
    await consumer.ping()
    await provider.send({"type": "ping"})
    assert await provider.recv() == {"type": "pong"}


async def test_a_withdrawn_type_parks_its_bindings_until_it_is_provided_again(live_engine: Engine) -> None:
    provider = await RawWorker.connect(live_engine.url)
    await provider.send({"type": "registertriggertype", "id": TYPE, "description": ""})
    consumer = await RawWorker.connect(live_engine.url)
    await consumer.send(binding("b-1"))
    await provider.recv_type("registertrigger")
    await provider.send({"type": "unregistertriggertype", "id": TYPE})
    await provider.ping()
    assert live_engine.triggers.provider_of(TYPE) is None
    await provider.send({"type": "registertriggertype", "id": TYPE, "description": ""})
    assert json.dumps((await provider.recv_type("registertrigger"))["config"]) == '{"path": "/gh"}'


async def test_a_binding_no_one_provides_for_is_logged_and_listed_as_waiting(
    live_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="iii.engine")
    consumer = await RawWorker.connect(live_engine.url)
    await consumer.send(binding("b-1"))
    await consumer.ping()
    # One line about the binding (a random worker id may contain "b-1" too).
    (warning,) = [r for r in caplog.records if "trigger b-1 " in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert TYPE in warning.getMessage() and "no worker provides" in warning.getMessage()
    assert await statuses(consumer) == {"b-1": "waiting"}
    waiting = (await consumer.result_of("engine::triggers::list", {}))["waiting"]
    assert [(w["trigger_type"], w["registered_triggers"]) for w in waiting] == [(TYPE, ["b-1"])]
    assert TYPE in waiting[0]["warning"]

    provider = await RawWorker.connect(live_engine.url)
    await provider.send({"type": "registertriggertype", "id": TYPE, "description": ""})
    await provider.recv_type("registertrigger")
    assert await statuses(consumer) == {"b-1": "active"}
    assert (await consumer.result_of("engine::triggers::list", {}))["waiting"] == []

    caplog.clear()
    await provider.close()
    await eventually(lambda: live_engine.triggers.provider_of(TYPE) is None, what="the provider's disconnect handled")
    assert any(TYPE in r.getMessage() and "no longer provided" in r.getMessage() for r in caplog.records)
    assert await statuses(consumer) == {"b-1": "waiting"}


async def statuses(worker: RawWorker) -> dict[str, str]:
    listing = await worker.result_of("engine::registered-triggers::list", {})
    return {row["id"]: row["status"] for row in listing["registered_triggers"]}
