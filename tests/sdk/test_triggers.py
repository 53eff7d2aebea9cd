"""Our SDK's triggers: a provider worker receives bindings from a consumer worker and fires them."""

from __future__ import annotations

import queue
from typing import Any

import pytest

from iii import InitOptions, TriggerAction, register_worker
from iii.testing import EngineProcess
from iii.trigger import TriggerConfig, TriggerHandler

TYPE = "test.ticks"
WAIT_S = 10


class RecordingHandler(TriggerHandler[Any]):
    """Keeps the live bindings and reports every call on a queue."""

    def __init__(self, refuse: bool = False) -> None:
        self.bindings: dict[str, TriggerConfig[Any]] = {}
        self.events: queue.Queue[tuple[str, TriggerConfig[Any]]] = queue.Queue()
        self.refuse = refuse

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        if self.refuse:
            self.events.put(("refuse", config))
            raise ValueError("this provider takes no bindings")
        self.bindings[config.id] = config
        self.events.put(("register", config))

    def unregister_trigger(self, config: TriggerConfig[Any]) -> None:  # a plain def works too
        self.bindings.pop(config.id, None)
        self.events.put(("unregister", config))


def next_event(handler: RecordingHandler) -> tuple[str, TriggerConfig[Any]]:
    return handler.events.get(timeout=WAIT_S)


def test_bindings_reach_the_provider_which_fires_them(engine: EngineProcess) -> None:
    handler = RecordingHandler()
    fired: queue.Queue[Any] = queue.Queue()
    with (
        register_worker(engine.url, InitOptions(worker_name="provider")) as provider,
        register_worker(engine.url, InitOptions(worker_name="consumer")) as consumer,
    ):
        provider.register_trigger_type({"id": TYPE, "description": "periodic ticks"}, handler)
        consumer.register_function("on.tick", lambda data: fired.put(data))
        trigger = consumer.register_trigger({"type": TYPE, "function_id": "on.tick", "config": {"every_s": 5}})
        kind, config = next_event(handler)
        assert (kind, config.id, config.function_id, config.config) == (
            "register",
            trigger.id,
            "on.tick",
            {"every_s": 5},
        )

        for binding in handler.bindings.values():  # the provider fires its bindings
            provider.trigger(
                {"function_id": binding.function_id, "payload": {"tick": 1}, "action": TriggerAction.Void()}
            )
        assert fired.get(timeout=WAIT_S)["tick"] == 1

        trigger.unregister()
        kind, config = next_event(handler)
        assert (kind, config.id, config.config) == ("unregister", trigger.id, {"every_s": 5})


def test_a_consumer_that_leaves_unbinds_and_a_provider_that_returns_gets_the_bindings_again(
    engine: EngineProcess,
) -> None:
    handler = RecordingHandler()
    provider = register_worker(engine.url, InitOptions(worker_name="provider"))
    consumer = register_worker(engine.url, InitOptions(worker_name="consumer"))
    try:
        provider.register_trigger_type({"id": TYPE}, handler)
        consumer.register_function("on.tick", lambda data: None)
        trigger = consumer.register_trigger({"type": TYPE, "function_id": "on.tick"})
        assert next_event(handler)[1].id == trigger.id
        provider.shutdown()

        returning = RecordingHandler()
        provider = register_worker(engine.url, InitOptions(worker_name="provider"))
        provider.register_trigger_type({"id": TYPE}, returning)
        kind, config = next_event(returning)
        assert (kind, config.id, config.function_id) == ("register", trigger.id, "on.tick")

        consumer.shutdown()
        kind, config = next_event(returning)
        assert (kind, config.id, config.function_id) == ("unregister", trigger.id, "on.tick")
    finally:
        consumer.shutdown()
        provider.shutdown()


def test_a_refused_binding_is_reported_to_the_binding_worker(
    engine: EngineProcess, caplog: pytest.LogCaptureFixture
) -> None:
    handler = RecordingHandler(refuse=True)
    with (
        register_worker(engine.url, InitOptions(worker_name="provider")) as provider,
        register_worker(engine.url, InitOptions(worker_name="consumer")) as consumer,
    ):
        provider.register_trigger_type({"id": TYPE}, handler)
        consumer.register_function("on.tick", lambda data: None)
        with caplog.at_level("WARNING", logger="iii.sdk"):
            trigger = consumer.register_trigger({"type": TYPE, "function_id": "on.tick"})
            assert next_event(handler)[0] == "refuse"
            # The refusal travels provider -> engine -> consumer, each socket in order: a round trip on the
            # provider's socket, then one on the consumer's, prove it has arrived.
            listing = provider.trigger({"function_id": "engine::workers::list", "payload": {}})
            assert len(listing["workers"]) == 2
            consumer.trigger({"function_id": "engine::workers::list", "payload": {}})
        [line] = [r.message for r in caplog.records if "refused binding" in r.message and trigger.id in r.message]
        assert "msgspec" not in line and line.endswith(
            ": trigger_registration_failed: this provider takes no bindings"
        )  # the error, readable
