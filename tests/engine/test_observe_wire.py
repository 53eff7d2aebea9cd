"""observe.v1 on the wire, against a live engine: what owners, watchers and targets receive, and what the engine
refuses to let a worker forge."""

from __future__ import annotations

from typing import Any

import pytest

from iii.engine import Engine, observing
from tests.engine.wire import RawWorker, scrape


async def workers(engine: Engine, count: int) -> list[RawWorker]:
    return [await RawWorker.connect(engine.url) for _ in range(count)]


async def declare(worker: RawWorker, name: str, features: list[str] | None = None) -> None:
    """Say who the worker is and that it speaks observe.v1, as the official 0.25 SDK does after connecting."""
    payload = {"name": name, "features": ["observe.v1", "local-dispatch.v1"] if features is None else features}
    await worker.invoke("engine::workers::register", payload, action={"type": "void"})
    await worker.ping()


async def observe(
    watcher: RawWorker, observer_id: str, source: dict[str, Any], target: str, **options: Any
) -> dict[str, Any]:
    """Send an ``observe`` (``options``: max_in_flight, ...) and return the engine's ``observeresult``."""
    message = {"type": "observe", "id": observer_id, "source": source, "target": {"function_id": target}, **options}
    await watcher.send(message)
    return await watcher.recv_type("observeresult")


async def accept(owner: RawWorker, function_id: str) -> dict[str, Any]:
    """The owner of ``function_id`` accepts the next observer the engine pushes to it; returns the push."""
    added = await owner.recv_type("observeradded")
    ack = {
        "type": "observerack",
        "function_id": function_id,
        "id": added["observer"]["id"],
        "revision": added["revision"],
    }
    await owner.send(ack)
    return added


async def test_an_owner_that_declared_observe_learns_its_observers_and_an_old_one_is_never_sent_them(
    live_engine: Engine,
) -> None:
    owner, old, watcher = await workers(live_engine, 3)
    await declare(owner, "owner")
    await declare(watcher, "watcher")
    await owner.send({"type": "registerfunction", "id": "shop::charge"})
    registered = await owner.recv_type("functionregistered")
    assert (registered["id"], registered["local_dispatch"], registered["observers"]) == ("shop::charge", True, [])
    await old.send({"type": "registerfunction", "id": "old::fn"})
    await old.send({"type": "ping"})
    assert [(await old.recv())["type"] for _ in range(2)] == ["functionactivated", "pong"]
    await watcher.register("app::target")
    result = await observe(watcher, "o1", {"function_id": "shop::charge"}, "app::target")
    assert result == {"type": "observeresult", "id": "o1", "state": "pending"}
    added = await accept(owner, "shop::charge")
    assert added["observer"]["id"] == "o1" and added["revision"] > registered["revision"]
    changed = await watcher.recv_type("observerstatechanged")
    assert (changed["id"], changed["state"]) == ("o1", "active")
    assert (await observe(watcher, "o2", {"function_id": "old::fn"}, "app::target"))["state"] == "active"
    await old.send({"type": "ping"})
    assert (await old.recv())["type"] == "pong"  # nothing of observe.v1 reached the old worker


async def test_a_routed_call_activates_its_observer_with_the_envelope_and_a_caller_the_worker_cannot_forge(
    live_engine: Engine,
) -> None:
    owner, watcher, caller = await workers(live_engine, 3)
    await declare(watcher, "watcher")
    await declare(caller, "caller")
    await owner.register("shop::charge")
    await watcher.register("app::on-charge")
    result = await observe(
        watcher, "o1", {"function_id": "shop::charge", "capture": ["input", "output", "caller"]}, "app::on-charge"
    )
    assert result["state"] == "active"  # the owner speaks no observe.v1: nobody else to ask
    forged = {"worker_id": "someone-else", "worker_name": "admin", "function_id": "app::checkout", "invocation_id": "i"}
    invocation_id = await caller.invoke("shop::charge", {"amount": 750}, caller=forged, observe_depth=2)
    delivery = await owner.serve_one(lambda d: {"charged": d["data"]["amount"]})
    answer = await caller.recv_type("invocationresult")
    assert answer["invocation_id"] == invocation_id and answer["result"] == {"charged": 750}
    assert delivery["caller"] == {
        "worker_id": caller.worker_id,
        "worker_name": "caller",
        "function_id": "app::checkout",
        "invocation_id": "i",
    }
    assert delivery["observe_depth"] == 2
    activation = await watcher.recv_type("invokefunction")
    envelope = activation["data"]
    assert envelope["observer_id"] == "o1" and envelope["status"] == "success"
    assert envelope["invocation_id"] == delivery["invocation_id"]
    assert envelope["input"] == {"amount": 750}  # as the caller sent it, without the engine's _caller_worker_id
    assert envelope["output"] == {"charged": 750}
    assert envelope["caller"]["worker_id"] == caller.worker_id
    assert activation["observe_depth"] == 3
    assert activation["caller"] == {
        "worker_name": "iii-engine",
        "function_id": "shop::charge",
        "invocation_id": delivery["invocation_id"],
    }
    assert activation["activation"] == {"observer_id": "o1", "activation_id": envelope["activation_id"]}


async def test_reports_and_owner_deliveries_count_only_from_the_function_owner(live_engine: Engine) -> None:
    owner, watcher, intruder = await workers(live_engine, 3)
    for worker, name in ((owner, "owner"), (watcher, "watcher"), (intruder, "intruder")):
        await declare(worker, name)
    await owner.send({"type": "registerfunction", "id": "cron::tick", "observe": {"delivery": "owner"}})
    await owner.recv_type("functionregistered")
    await watcher.register("app::on-tick")
    await observe(watcher, "o1", {"function_id": "cron::tick", "args": {"expression": "*/5"}}, "app::on-tick")
    added = await accept(owner, "cron::tick")
    assert added["observer"]["args"] == {"expression": "*/5"}
    await watcher.recv_type("observerstatechanged")

    def report(n: int) -> dict[str, Any]:
        item = {"function_id": "cron::tick", "invocation_id": f"tick-{n}", "matched": ["o1"], "input": {"n": n}}
        return {"type": "invocationsobserved", "items": [item]}

    await intruder.send(report(1))  # not the owner's: no activation
    refused = await intruder.call("app::on-tick", {"n": 2}, activation={"observer_id": "o1"})
    assert refused["error"]["code"] == "OBSERVER_NOT_ACTIVE"
    await owner.send(report(3))
    activation = await watcher.recv_type("invokefunction")
    assert activation["data"]["input"] == {"n": 3}  # the forged report came first and did nothing
    await watcher.send(
        {"type": "invocationresult", "invocation_id": activation["invocation_id"], "function_id": "app::on-tick"}
    )
    call = await owner.invoke("ignored::by-the-engine", {"path": "/x"}, activation={"observer_id": "o1"})
    delivered = await watcher.recv_type("invokefunction")
    assert delivered["function_id"] == "app::on-tick" and delivered["data"]["path"] == "/x"
    assert delivered["activation"]["observer_id"] == "o1"
    await watcher.send(
        {
            "type": "invocationresult",
            "invocation_id": delivered["invocation_id"],
            "function_id": "app::on-tick",
            "result": "routed",
        }
    )
    answer = await owner.recv_type("invocationresult")
    assert answer["invocation_id"] == call and answer["result"] == "routed"


async def test_the_loop_guard_drops_an_activation_nested_too_deep_and_counts_it(live_engine: Engine) -> None:
    owner, watcher = await workers(live_engine, 2)
    await declare(owner, "owner")
    await declare(watcher, "watcher")
    await owner.send({"type": "registerfunction", "id": "app::loop"})
    await owner.recv_type("functionregistered")
    await watcher.register("app::on-loop")
    await observe(watcher, "o1", {"function_id": "app::loop"}, "app::on-loop")
    await accept(owner, "app::loop")
    await watcher.recv_type("observerstatechanged")
    item = {"function_id": "app::loop", "invocation_id": "deep", "matched": ["o1"], "input": 1, "observe_depth": 8}
    await owner.send({"type": "invocationsobserved", "items": [item]})
    info = await owner.result_of("engine::observers::get", {"id": "o1"})
    assert info["observer"]["dropped"] == {"LOOP_GUARD": 1}
    assert info["observer"]["fires"] == 0
    _, samples = await scrape(live_engine)
    assert samples[("iii_observer_drops_total", "reason=LOOP_GUARD")] == 1
    assert samples[("iii_observers", "state=active")] == 1


async def test_max_in_flight_holds_activations_until_earlier_ones_end(live_engine: Engine) -> None:
    owner, watcher, caller = await workers(live_engine, 3)
    await declare(watcher, "watcher")
    await owner.register("app::fn")
    await watcher.register("app::target")
    await observe(watcher, "o1", {"function_id": "app::fn", "capture": ["input"]}, "app::target", max_in_flight=1)
    for n in range(3):
        await caller.invoke("app::fn", n)
        await owner.serve_one(lambda d: None)
    first = await watcher.recv_type("invokefunction")
    info = await caller.result_of("engine::observers::get", {"id": "o1"})
    assert (info["observer"]["in_flight"], info["observer"]["waiting"]) == (1, 2)
    seen = [first["data"]["input"]]
    for _ in range(2):
        await watcher.send({"type": "invocationresult", "invocation_id": first["invocation_id"], "function_id": "x"})
        first = await watcher.recv_type("invokefunction")
        seen.append(first["data"]["input"])
    assert seen == [0, 1, 2]  # in order, one at a time
    error = {"code": "boom", "message": "the target failed"}
    await watcher.send(
        {"type": "invocationresult", "invocation_id": first["invocation_id"], "function_id": "x", "error": error}
    )
    info = await caller.result_of("engine::observers::get", {"id": "o1"})
    assert (info["observer"]["in_flight"], info["observer"]["failures"]) == (0, 1)
    _, samples = await scrape(live_engine)
    assert samples[("iii_observer_activations_total", "outcome=ok")] == 2
    assert samples[("iii_observer_activations_total", "outcome=failed")] == 1


async def test_a_malformed_observe_gets_an_error_notice_and_the_connection_goes_on(live_engine: Engine) -> None:
    watcher = await RawWorker.connect(live_engine.url)
    await watcher.send({"type": "observe", "id": "o1", "source": "not an object", "target": {"function_id": "x"}})
    notice = await watcher.recv_type("error")
    assert notice["error"]["code"] == "invalid_message"
    result = await observe(watcher, "o2", {"function_id": "a", "filters": {"$where": "1"}}, "b")
    assert (result["state"], result["error"]["code"]) == ("error", "INVALID_FILTER")
    await watcher.ping()


# --- observe and register_trigger: two views of one binding -------------------------------------------------


async def test_observe_of_a_trigger_type_is_a_binding_to_it(live_engine: Engine) -> None:
    """A 0.25 worker binds to the engine's pub/sub with ``observe`` instead of the deprecated register_trigger."""
    watcher, publisher = await workers(live_engine, 2)
    await declare(watcher, "watcher")
    await watcher.register("app::on-order")
    result = await observe(watcher, "sub-1", {"function_id": "subscribe", "args": {"topic": "orders"}}, "app::on-order")
    assert result["state"] == "active"
    listed = await publisher.result_of("engine::registered-triggers::list", {"trigger_type": "subscribe"})
    assert [(row["id"], row["function_id"]) for row in listed["registered_triggers"]] == [("sub-1", "app::on-order")]
    await publisher.result_of("publish", {"topic": "orders", "data": {"id": 7}})
    delivery = await watcher.serve_one(lambda d: None)
    assert (delivery["function_id"], delivery["data"]) == ("app::on-order", {"id": 7})
    await watcher.send({"type": "unobserve", "id": "sub-1"})
    await watcher.ping()
    listed = await publisher.result_of("engine::registered-triggers::list", {"trigger_type": "subscribe"})
    assert listed["registered_triggers"] == []


async def test_what_only_function_observers_have_is_refused_for_a_trigger_type(live_engine: Engine) -> None:
    [watcher] = await workers(live_engine, 1)
    await declare(watcher, "watcher")
    source = {"function_id": "subscribe", "args": {"topic": "t"}, "filters": {"input.x": {"$eq": 1}}}
    result = await observe(watcher, "o1", source, "app::x")
    assert (result["state"], result["error"]["code"]) == ("error", "UNSUPPORTED")
    assert "filters" in result["error"]["message"]


async def test_a_worker_provider_sees_an_observer_as_a_trigger_and_its_refusal_reaches_the_watcher(
    live_engine: Engine,
) -> None:
    provider, watcher = await workers(live_engine, 2)
    await declare(watcher, "watcher")
    await provider.send({"type": "registertriggertype", "id": "webhook", "description": "old-style provider"})
    await provider.ping()
    await watcher.register("app::on-hook")
    result = await observe(watcher, "o1", {"function_id": "webhook", "args": {"path": "/x"}}, "app::on-hook")
    assert result["state"] == "active"
    registration = await provider.recv_type("registertrigger")
    assert (registration["id"], registration["function_id"], registration["config"]) == (
        "o1",
        "app::on-hook",
        {"path": "/x"},
    )
    error = {"code": "BAD_PATH", "message": "no such path"}
    await provider.send({"type": "triggerregistrationresult", "id": "o1", "trigger_type": "webhook", "error": error})
    changed = await watcher.recv_type("observerstatechanged")
    assert (changed["state"], changed["reason"]) == ("error", error)


async def test_an_old_workers_trigger_of_a_type_a_function_took_over_is_an_observer_of_it(live_engine: Engine) -> None:
    owner, old = await workers(live_engine, 2)
    await declare(owner, "owner")
    await old.register("old::on-tick")
    # The old worker binds first: its trigger waits for the type, then goes to the function that takes it over.
    await old.send(
        {
            "type": "registertrigger",
            "id": "t1",
            "trigger_type": "ticker",
            "function_id": "old::on-tick",
            "config": {"every": "5s"},
        }
    )
    await old.ping()
    descriptor = {"delivery": "owner", "legacy_trigger_type": "ticker"}
    await owner.send({"type": "registerfunction", "id": "ticker::tick", "observe": descriptor})
    registered = await owner.recv_type("functionregistered")
    [observer] = registered["observers"]
    assert observer["id"] == "t1" and observer["args"] == {"every": "5s"} and observer["target"] == "old::on-tick"
    assert observer["legacy"] == {"trigger_type": "ticker", "config": {"every": "5s"}}
    await owner.send(
        {"type": "observerack", "function_id": "ticker::tick", "id": "t1", "revision": registered["revision"]}
    )
    await owner.ping()
    item = {"function_id": "ticker::tick", "invocation_id": "e1", "matched": ["t1"], "input": {"tick": 1}}
    await owner.send({"type": "invocationsobserved", "items": [item]})
    delivery = await old.serve_one(lambda d: None)
    assert delivery["data"] == {"tick": 1}  # the event itself, as the type's provider would have sent it
    # A later trigger of the type goes straight to the function, and a refusal reaches the old worker in its words.
    await old.send(
        {
            "type": "registertrigger",
            "id": "t2",
            "trigger_type": "ticker",
            "function_id": "old::on-tick",
            "config": {"every": "never"},
        }
    )
    added = await owner.recv_type("observeradded")
    refusal = {"code": "BAD_INTERVAL", "message": "never is not an interval"}
    await owner.send(
        {
            "type": "observerack",
            "function_id": "ticker::tick",
            "id": "t2",
            "revision": added["revision"],
            "error": refusal,
        }
    )
    refused = await old.recv_type("triggerregistrationresult")
    assert (refused["id"], refused["trigger_type"], refused["error"]) == ("t2", "ticker", refusal)
    await old.send({"type": "unregistertrigger", "id": "t1", "trigger_type": "ticker"})
    removed = await owner.recv_type("observerremoved")
    assert removed["id"] == "t1"


async def test_activations_held_back_are_bounded_in_bytes_and_the_rest_dropped_and_not_counted_as_fires(
    live_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observing, "MAX_WAITING_BYTES", 3 * 1024 * 1024)
    owner, watcher = await workers(live_engine, 2)
    await declare(owner, "owner")
    await declare(watcher, "watcher")
    await owner.send({"type": "registerfunction", "id": "app::big"})
    await owner.recv_type("functionregistered")
    await watcher.register("app::slow-target")  # it never answers: one activation runs, the rest wait
    await observe(watcher, "o1", {"function_id": "app::big", "capture": ["input"]}, "app::slow-target", max_in_flight=1)
    await accept(owner, "app::big")
    await watcher.recv_type("observerstatechanged")
    blob = "x" * 1024 * 1024  # over 1 MiB with its envelope: two fit in 3 MiB, a third does not
    for n in range(6):
        item = {"function_id": "app::big", "invocation_id": f"i{n}", "matched": ["o1"], "input": blob}
        await owner.send({"type": "invocationsobserved", "items": [item]})
    info = (await owner.result_of("engine::observers::get", {"id": "o1"}))["observer"]
    assert (info["in_flight"], info["waiting"], info["dropped"], info["fires"]) == (1, 2, {"QUEUE_FULL": 3}, 3)


async def test_thousands_of_waiting_activations_of_a_target_that_left_are_dropped_in_a_loop(
    live_engine: Engine,
) -> None:
    """When the target's worker goes, its running activation fails and each waiting one finds no target: the
    engine works through them one after another (a recursion would overflow the stack past a thousand)."""
    owner, target_host, asker = await workers(live_engine, 3)
    await declare(owner, "owner")
    await owner.send({"type": "registerfunction", "id": "app::busy"})
    await owner.recv_type("functionregistered")
    await target_host.register("app::sink")  # never answers
    await owner.send(
        {
            "type": "observe",
            "id": "o1",
            "source": {"function_id": "app::busy"},
            "target": {"function_id": "app::sink"},
            "max_in_flight": 1,
        }
    )
    added = await owner.recv_type("observeradded")  # the owner observes its own function: it is asked first
    assert (await owner.recv_type("observeresult"))["state"] == "pending"
    await owner.send({"type": "observerack", "function_id": "app::busy", "id": "o1", "revision": added["revision"]})
    await owner.recv_type("observerstatechanged")
    items = [{"function_id": "app::busy", "invocation_id": f"i{n}", "matched": ["o1"], "input": n} for n in range(3000)]
    await owner.send({"type": "invocationsobserved", "items": items})
    await owner.ping()  # the report is handled before the ping on the same connection
    info = (await asker.result_of("engine::observers::get", {"id": "o1"}))["observer"]
    assert (info["in_flight"], info["waiting"]) == (1, 2999), info
    await target_host.close()
    await owner.recv_type("observerstatechanged")  # suspended: its target is gone
    info = (await asker.result_of("engine::observers::get", {"id": "o1"}))["observer"]
    assert (info["in_flight"], info["waiting"], info["dropped"]) == (0, 0, {"TARGET_MISSING": 2999})
    await asker.ping()  # the engine goes on
