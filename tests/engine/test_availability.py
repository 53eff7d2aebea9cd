"""The engine's own trigger types ``engine::functions-available`` and ``engine::workers-available``.

A bound function is called (fire-and-forget) with the reference engine's payloads when the function set
changes or a worker connects, describes itself or leaves.
"""

from __future__ import annotations

from typing import Any

from iii.engine import Engine
from tests.engine.wire import RawWorker


async def watcher(engine: Engine, trigger_type: str, function_id: str, binding_id: str) -> RawWorker:
    """A worker serving ``function_id``, bound to ``trigger_type`` (with binding metadata ``{"who": binding_id}``)."""
    worker = await RawWorker.connect(engine.url)
    await worker.send({"type": "registerfunction", "id": function_id})
    await worker.send(
        {
            "type": "registertrigger",
            "id": binding_id,
            "trigger_type": trigger_type,
            "function_id": function_id,
            "config": {},
            "metadata": {"who": binding_id},
        }
    )
    await worker.ping()
    return worker


async def next_call(worker: RawWorker) -> dict[str, Any]:
    """The next invocation delivered to ``worker``."""
    return await worker.recv_type("invokefunction")


async def listed_ids(worker: RawWorker, wanted: set[str], present: bool) -> dict[str, Any]:
    """The next functions-available call whose list has every id of ``wanted`` (or none of them)."""
    while True:
        call = await next_call(worker)
        ids = {f["function_id"] for f in call["data"]["functions"]}
        if (wanted <= ids) if present else not (wanted & ids):
            return call


async def test_functions_available_tells_bound_functions_of_new_and_removed_functions(live_engine: Engine) -> None:
    watch = await watcher(live_engine, "engine::functions-available", "watch.functions", "fa-1")
    other = await RawWorker.connect(live_engine.url)
    await other.send({"type": "registerfunction", "id": "shop.a", "description": "A"})
    await other.send({"type": "registerfunction", "id": "shop.b"})
    call = await listed_ids(watch, {"shop.a", "shop.b"}, present=True)
    assert call["function_id"] == "watch.functions"
    assert "invocation_id" in call and call["metadata"] == {"who": "fa-1"}
    assert call["data"]["event"] == "functions_changed"
    rows = {f["function_id"]: f for f in call["data"]["functions"]}
    assert rows["shop.a"] == {
        "function_id": "shop.a",
        "namespace": "default",
        "worker_name": "",
        "worker_id": other.worker_id,
        "description": "A",
    }
    assert "engine::functions::list" in rows  # the reference's payload lists every function
    await other.send({"type": "unregisterfunction", "id": "shop.a"})
    after = {f["function_id"] for f in (await next_call(watch))["data"]["functions"]}
    assert "shop.b" in after and "shop.a" not in after
    await other.close()  # its last function goes with it
    await listed_ids(watch, {"shop.b"}, present=False)


async def test_an_unbound_function_is_told_nothing_more(live_engine: Engine) -> None:
    first = await watcher(live_engine, "engine::functions-available", "watch.first", "fa-1")
    second = await watcher(live_engine, "engine::functions-available", "watch.second", "fa-2")
    await first.send({"type": "unregistertrigger", "id": "fa-1"})
    await first.ping()
    other = await RawWorker.connect(live_engine.url)
    await other.send({"type": "registerfunction", "id": "late.one"})
    await listed_ids(second, {"late.one"}, present=True)
    # Both bindings are fired together; had `first` still been bound, its call would come before this pong.
    await first.send({"type": "ping"})
    assert (await first.recv())["type"] == "pong"


async def test_workers_available_tells_of_connects_descriptions_and_disconnects(live_engine: Engine) -> None:
    watch = await watcher(live_engine, "engine::workers-available", "watch.workers", "wa-1")
    other = await RawWorker.connect(live_engine.url)
    connected = await next_call(watch)
    assert connected["data"] == {"event": "worker_connected", "worker_id": other.worker_id}
    assert connected["metadata"] == {"who": "wa-1"}
    await other.send(
        {
            "type": "invokefunction",
            "function_id": "engine::workers::register",
            "data": {"name": "newcomer"},
            "action": {"type": "void"},
        }
    )
    assert (await next_call(watch))["data"] == {"event": "worker_metadata_updated", "worker_id": other.worker_id}
    await other.close()
    assert (await next_call(watch))["data"] == {"event": "worker_disconnected", "worker_id": other.worker_id}


async def test_the_engine_types_are_listed_and_their_bindings_active(live_engine: Engine) -> None:
    watch = await watcher(live_engine, "engine::workers-available", "watch.workers", "wa-1")
    listing = await watch.result_of("engine::registered-triggers::list", {})
    assert [(r["id"], r["status"]) for r in listing["registered_triggers"]] == [("wa-1", "active")]
    info = await watch.result_of("engine::triggers::info", {"id": "engine::functions-available"})
    assert (info["worker_name"], info["instance_count"]) == ("engine", 0)
    assert info["description"]
