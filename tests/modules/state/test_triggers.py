"""The ``state`` trigger type: bound functions are called with the reference's event, for matching changes only."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from iii.modules.state import StateModule
from tests.modules.local_host import LocalHost
from tests.modules.state.conftest import StartModule

State = tuple[StateModule, LocalHost]


def record(host: LocalHost, function_id: str) -> list[Any]:
    """Serve ``function_id`` as a handler that keeps the events it gets."""
    events: list[Any] = []

    def handler(event: Any) -> dict[str, Any]:
        events.append(event)
        return {}

    host.serve(function_id, handler)
    return events


def event(event_type: str, scope: str, key: str, old: Any, new: Any) -> dict[str, Any]:
    return {"type": "state", "event_type": event_type, "scope": scope, "key": key, "old_value": old, "new_value": new}


async def test_created_updated_and_deleted_events_carry_old_and_new_values(state: State) -> None:
    module, host = state
    events = record(host, "on.change")
    assert host.bind("state", "on.change", {})[1] is None
    await host.call("state::set", {"scope": "users", "key": "u1", "value": {"n": 1}})
    await host.call("state::set", {"scope": "users", "key": "u1", "value": {"n": 2}})
    await host.call(
        "state::update", {"scope": "users", "key": "u1", "ops": [{"type": "increment", "path": "n", "by": 1}]}
    )
    await host.call("state::update", {"scope": "users", "key": "u2", "ops": [{"type": "set", "path": "a", "value": 1}]})
    await host.call("state::delete", {"scope": "users", "key": "u1"})
    await host.call("state::delete", {"scope": "users", "key": "absent"})  # nothing deleted: no event
    await module.settle_triggers()
    assert sorted(events, key=repr) == sorted(
        [
            event("state:created", "users", "u1", None, {"n": 1}),
            event("state:updated", "users", "u1", {"n": 1}, {"n": 2}),
            event("state:updated", "users", "u1", {"n": 2}, {"n": 3}),
            event("state:created", "users", "u2", None, {"a": 1}),
            event("state:deleted", "users", "u1", {"n": 3}, None),
        ],
        key=repr,
    )


async def test_scope_and_key_filters_select_the_bindings_called(state: State) -> None:
    module, host = state
    configs: dict[str, dict[str, Any]] = {
        "all": {},
        "scope": {"scope": "orders"},
        "key": {"key": "o1"},
        "both": {"scope": "orders", "key": "o1"},
        "other": {"scope": "users", "key": "o1"},
        "nulls": {"scope": None, "key": None},
    }
    seen = {name: record(host, f"fn.{name}") for name in configs}
    for name, config in configs.items():
        assert host.bind("state", f"fn.{name}", config)[1] is None
    await host.call("state::set", {"scope": "orders", "key": "o1", "value": 1})
    await host.call("state::set", {"scope": "orders", "key": "o2", "value": 2})
    await host.call("state::set", {"scope": "carts", "key": "o1", "value": 3})
    await module.settle_triggers()
    called = {name: sorted((e["scope"], e["key"]) for e in events) for name, events in seen.items()}
    assert called == {
        "all": [("carts", "o1"), ("orders", "o1"), ("orders", "o2")],
        "scope": [("orders", "o1"), ("orders", "o2")],
        "key": [("carts", "o1"), ("orders", "o1")],
        "both": [("orders", "o1")],
        "other": [],
        "nulls": [("carts", "o1"), ("orders", "o1"), ("orders", "o2")],
    }


async def test_a_condition_function_decides_whether_the_binding_runs(state: State) -> None:
    module, host = state
    verdicts: dict[str, Any] = {"yes": True, "no": False, "silent": None}
    for name, verdict in verdicts.items():
        host.serve(f"cond.{name}", lambda _event, verdict=verdict: verdict)

    def broken(_event: Any) -> Any:
        raise RuntimeError("condition crashed")

    host.serve("cond.broken", broken)
    seen = {name: record(host, f"fn.{name}") for name in [*verdicts, "broken"]}
    for name in seen:
        assert host.bind("state", f"fn.{name}", {"condition_function_id": f"cond.{name}"})[1] is None
    await host.call("state::set", {"scope": "s", "key": "k", "value": 1})
    await module.settle_triggers()
    assert {name: len(events) for name, events in seen.items()} == {"yes": 1, "no": 0, "silent": 1, "broken": 0}
    condition_calls = [data for function_id, data in host.invocations if function_id == "cond.yes"]
    assert condition_calls == [event("state:created", "s", "k", None, 1)]  # the condition sees the event


async def test_an_unbound_function_is_no_longer_called(state: State) -> None:
    module, host = state
    events = record(host, "fn")
    binding, _ = host.bind("state", "fn", {"scope": "s"})
    await host.call("state::set", {"scope": "s", "key": "k", "value": 1})
    await module.settle_triggers()
    host.unbind(binding)
    await host.call("state::set", {"scope": "s", "key": "k", "value": 2})
    await module.settle_triggers()
    assert [e["new_value"] for e in events] == [1]


async def test_a_failing_handler_does_not_fail_the_write(state: State) -> None:
    module, host = state

    def failing(_event: Any) -> Any:
        raise RuntimeError("handler crashed")

    host.serve("fn.failing", failing)
    events = record(host, "fn.after")
    host.bind("state", "fn.failing", {})
    host.bind("state", "fn.after", {})
    assert await host.call("state::set", {"scope": "s", "key": "k", "value": 1}) == {"old_value": None, "new_value": 1}
    await module.settle_triggers()
    assert len(events) == 1  # the next binding is still called


@pytest.mark.parametrize(
    ("config", "reason"),
    [({"scope": 123}, "`scope` must be a string"), ({"key": ["k"]}, "`key` must be a string"), ("s", "an object")],
)
async def test_a_bad_config_is_refused_with_the_reason(state: State, config: Any, reason: str) -> None:
    _, host = state
    _, refusal = host.bind("state", "fn", config)
    assert refusal is not None
    assert reason in refusal


async def test_triggers_can_be_disabled(start_module: StartModule) -> None:
    module, host = await start_module(triggers_enabled=False)
    events = record(host, "fn")
    host.bind("state", "fn", {})
    await host.call("state::set", {"scope": "s", "key": "k", "value": 1})
    await module.settle_triggers()
    assert events == []


async def test_the_changes_waiting_for_a_function_are_bounded_by_a_setting(start_module: StartModule) -> None:
    """``trigger_max_waiting`` bounds what waits for one bound function that does not answer: past it the changes
    are dropped for that function and counted; once it answers it gets the ones it kept, in order."""
    module, host = await start_module(trigger_max_waiting=2)
    release = asyncio.Event()
    heard: list[Any] = []

    async def stuck(change: Any) -> dict[str, Any]:
        heard.append(change["new_value"])
        await release.wait()
        return {}

    host.serve("fn", stuck)
    host.bind("state", "fn", {})
    for n in range(5):
        await host.call("state::set", {"scope": "s", "key": "k", "value": n})
    samples = [sample for sample in module.metrics() if sample.name == "state_trigger_calls"]
    calls = {sample.labels["outcome"]: sample.value for sample in samples}
    assert calls["dropped"] == 3
    release.set()
    await module.settle_triggers()
    assert heard == [0, 1]


def test_trigger_max_waiting_must_be_positive(settings_for: Any) -> None:
    with pytest.raises(ValueError, match="trigger_max_waiting"):
        settings_for(trigger_max_waiting=0)
