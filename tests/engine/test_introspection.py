"""The listing and info builtins answer with the reference engine's shapes, on the wire.

Clients written for the reference engine (its iii-browser live-engine tests, the console) read
``engine::triggers::list`` as trigger TYPES and ``engine::registered-triggers::list`` as the bindings;
a wrong shape is misread without any error, so the shapes are checked field by field.
"""

from __future__ import annotations

from typing import Any

from iii.engine import Engine
from tests.engine.wire import RawWorker

TYPE = "test.webhook"


async def named(engine: Engine, name: str, **metadata: Any) -> RawWorker:
    """A connected worker that described itself as ``name`` (as every SDK does after connecting)."""
    worker = await RawWorker.connect(engine.url)
    await worker.send(
        {
            "type": "invokefunction",
            "function_id": "engine::workers::register",
            "data": {"name": name, **metadata},
            "action": {"type": "void"},
        }
    )
    await worker.ping()
    return worker


async def provider_and_consumer(engine: Engine) -> tuple[RawWorker, RawWorker]:
    """``hooks-provider`` provides TYPE (with schemas); ``shop`` serves ``shop.on_push``, bound to it as b-1."""
    provider = await named(engine, "hooks-provider")
    await provider.send(
        {
            "type": "registertriggertype",
            "id": TYPE,
            "description": "Webhooks",
            "trigger_request_format": {"type": "object", "properties": {"path": {"type": "string"}}},
            "call_request_format": {"type": "object"},
        }
    )
    consumer = await named(engine, "shop")
    await consumer.send(
        {
            "type": "registerfunction",
            "id": "shop.on_push",
            "description": "Handle a push",
            "request_format": {"type": "object"},
            "response_format": {"type": "string"},
            "metadata": {"team": "a"},
        }
    )
    await consumer.send(
        {
            "type": "registertrigger",
            "id": "b-1",
            "trigger_type": TYPE,
            "function_id": "shop.on_push",
            "config": {"path": "/gh"},
            "metadata": {"m": 1},
        }
    )
    await provider.recv_type("registertrigger")
    return provider, consumer


# --- engine::triggers::list / ::info -------------------------------------------------------------------------


async def test_triggers_list_holds_trigger_types_not_bindings(core_engine: Engine) -> None:
    _, consumer = await provider_and_consumer(core_engine)
    listing = await consumer.result_of("engine::triggers::list", {})
    assert listing["triggers"] == [
        {
            "id": "http",
            "namespace": "default",
            "worker_name": "http",  # the module that provides it
            "description": listing["triggers"][0]["description"],
        },
        {"id": TYPE, "namespace": "default", "worker_name": "hooks-provider", "description": "Webhooks"},
    ]
    assert listing["triggers"][0]["description"]  # the reference's clients expect one
    assert listing["waiting"] == []
    everything = await consumer.result_of("engine::triggers::list", {"include_internal": True})
    assert [t["id"] for t in everything["triggers"]] == [
        "engine::functions-available",
        "engine::workers-available",
        "http",
        TYPE,
    ]


async def test_triggers_list_filters(live_engine: Engine) -> None:
    _, consumer = await provider_and_consumer(live_engine)

    async def ids(**filters: Any) -> list[str]:
        return [t["id"] for t in (await consumer.result_of("engine::triggers::list", filters))["triggers"]]

    assert await ids(prefix="test.") == [TYPE]
    assert await ids(worker="hooks-provider") == [TYPE]
    assert await ids(search="WEBHOOK") == [TYPE]  # case-insensitive, id or description
    assert await ids(search="nothing like it") == []


async def test_triggers_info_gives_schemas_and_live_instance_count(core_engine: Engine) -> None:
    _, consumer = await provider_and_consumer(core_engine)
    info = await consumer.result_of("engine::triggers::info", {"id": TYPE})
    assert info == {
        "id": TYPE,
        "namespace": "default",
        "worker_name": "hooks-provider",
        "description": "Webhooks",
        "configuration_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
        "request_schema": {"type": "object"},
        "instance_count": 1,
    }
    http = await consumer.result_of("engine::triggers::info", {"id": "http"})
    assert (http["worker_name"], http["instance_count"]) == ("http", 0)  # the module that provides it
    missing = await consumer.call("engine::triggers::info", {"id": "cron"})
    assert missing["error"]["code"] == "NOT_FOUND" and "'cron'" in missing["error"]["message"]
    no_id = await consumer.call("engine::triggers::info", {})
    assert no_id["error"]["code"] == "deserialization_error"


# --- engine::registered-triggers::list / ::info --------------------------------------------------------------


async def test_registered_triggers_list_holds_the_bindings(live_engine: Engine) -> None:
    _, consumer = await provider_and_consumer(live_engine)
    listing = await consumer.result_of("engine::registered-triggers::list", {})
    assert listing == {
        "registered_triggers": [
            {
                "id": "b-1",
                "trigger_type": TYPE,
                "function_id": "shop.on_push",
                "worker_name": "shop",
                "config": {"path": "/gh"},
                "config_summary": '{"path":"/gh"}',
                "status": "active",
            }
        ]
    }


async def test_registered_triggers_list_filters_and_cuts_long_summaries(live_engine: Engine) -> None:
    _, consumer = await provider_and_consumer(live_engine)
    long_path = "/" + "x" * 200
    await consumer.send(
        {
            "type": "registertrigger",
            "id": "b-2",
            "trigger_type": "http",
            "function_id": "shop.on_push",
            "config": {"api_path": long_path, "http_method": "GET"},
        }
    )
    await consumer.send(
        {"type": "registertrigger", "id": "b-3", "trigger_type": TYPE, "function_id": "engine::functions::list"}
    )
    await consumer.ping()

    async def rows(**filters: Any) -> list[dict[str, Any]]:
        listing = await consumer.result_of("engine::registered-triggers::list", filters)
        found: list[dict[str, Any]] = listing["registered_triggers"]
        return found

    assert [r["id"] for r in await rows()] == ["b-1", "b-2"]  # b-3 calls an engine::* function
    assert [r["id"] for r in await rows(include_internal=True)] == ["b-1", "b-2", "b-3"]
    assert [r["id"] for r in await rows(trigger_type="http")] == ["b-2"]
    assert [r["id"] for r in await rows(function_id="shop.on_push", search="B-2")] == ["b-2"]
    assert [r["id"] for r in await rows(worker="shop")] == ["b-1", "b-2"]
    (long,) = await rows(trigger_type="http")
    assert len(long["config_summary"]) == 81 and long["config_summary"].endswith("…")
    assert long["config"]["api_path"] == long_path


async def test_registered_triggers_info_gives_the_type_and_function_detail(live_engine: Engine) -> None:
    provider, consumer = await provider_and_consumer(live_engine)
    info = await consumer.result_of("engine::registered-triggers::info", {"id": "b-1"})
    assert info == {
        "id": "b-1",
        "trigger_type": TYPE,
        "function_id": "shop.on_push",
        "worker_name": "shop",
        "config": {"path": "/gh"},
        "status": "active",
        "metadata": {"m": 1},
        "trigger": await consumer.result_of("engine::triggers::info", {"id": TYPE}),
        "function": await consumer.result_of("engine::functions::info", {"function_id": "shop.on_push"}),
    }
    await provider.close()
    await consumer.send({"type": "unregisterfunction", "id": "shop.on_push"})
    await consumer.ping()
    dangling = await consumer.result_of("engine::registered-triggers::info", {"id": "b-1"})
    assert (dangling["trigger"], dangling["function"], dangling["status"]) == (None, None, "waiting")
    missing = await consumer.call("engine::registered-triggers::info", {"id": "nope"})
    assert missing["error"]["code"] == "NOT_FOUND"


# --- engine::functions::list / ::info ------------------------------------------------------------------------


async def test_functions_info_gives_schemas_owner_and_bound_triggers(live_engine: Engine) -> None:
    _, consumer = await provider_and_consumer(live_engine)
    info = await consumer.result_of("engine::functions::info", {"function_id": "shop.on_push"})
    assert info == {
        "function_id": "shop.on_push",
        "namespace": "default",
        "worker_name": "shop",
        "worker_id": consumer.worker_id,
        "description": "Handle a push",
        "metadata": {"team": "a"},
        "request_schema": {"type": "object"},
        "response_schema": {"type": "string"},
        "registered_triggers": [{"id": "b-1", "trigger_type": TYPE, "config": {"path": "/gh"}, "status": "active"}],
    }
    batch = await consumer.result_of("engine::functions::info", {"function_ids": ["shop.on_push", "nope", "nope"]})
    assert batch == {"functions": [info, {"function_id": "nope", "error": "not_found"}]}


async def test_functions_info_refuses_unknown_ids_and_bad_arguments(live_engine: Engine) -> None:
    worker = await RawWorker.connect(live_engine.url)
    for payload, code in [
        ({"function_id": "nope"}, "NOT_FOUND"),
        ({"function_id": "engine::functions::list", "namespace": "other"}, "NOT_FOUND"),
        ({}, "INVALID_ARGUMENTS"),
        ({"function_id": "a", "function_ids": ["a"]}, "INVALID_ARGUMENTS"),
        ({"function_ids": []}, "INVALID_ARGUMENTS"),
        ({"function_ids": [str(i) for i in range(33)]}, "INVALID_ARGUMENTS"),
        ({"function_ids": "a"}, "deserialization_error"),
    ]:
        answer = await worker.call("engine::functions::info", payload)
        assert answer["error"]["code"] == code, payload
    builtin = await worker.result_of("engine::functions::info", {"function_id": "engine::functions::list"})
    assert (builtin["worker_name"], builtin["registered_triggers"]) == ("engine", [])


async def test_functions_list_filters_like_the_reference(core_engine: Engine) -> None:
    billing = await named(core_engine, "billing")
    for function_id, description, metadata in [
        ("billing::charge", "Charge a card", None),
        ("billing::refund", "Give the money back", None),
        ("billing::on-config", None, {"internal": True}),
    ]:
        await billing.send(
            {"type": "registerfunction", "id": function_id, "description": description, "metadata": metadata}
        )
    ops = await named(core_engine, "ops")
    await ops.send({"type": "registerfunction", "id": "ops::state", "description": "mentions billing"})
    await ops.ping()

    async def ids(**filters: Any) -> list[str]:
        listing = await ops.result_of("engine::functions::list", filters)
        return [f["function_id"] for f in listing["functions"]]

    assert await ids() == ["billing::charge", "billing::refund", "ops::state"]  # sorted; internal ones hidden
    assert "billing::on-config" in await ids(include_internal=True)
    assert await ids(search="MONEY") == ["billing::refund"]  # case-insensitive, in the description too
    assert await ids(search="billing") == ["billing::charge", "billing::refund", "ops::state"]  # id hits first
    assert await ids(worker="ops") == ["ops::state"]
    assert await ids(workers=["ops", "billing"], prefix="billing::c") == ["billing::charge"]


# --- engine::workers::list / ::info --------------------------------------------------------------------------


async def test_workers_info_gives_a_workers_whole_surface(live_engine: Engine) -> None:
    provider, consumer = await provider_and_consumer(live_engine)
    info = await consumer.result_of("engine::workers::info", {"name": "shop"})
    assert info["worker"]["id"] == consumer.worker_id
    assert (info["worker"]["name"], info["worker"]["namespace"], info["worker"]["internal"]) == (
        "shop",
        "default",
        False,
    )
    assert [f["function_id"] for f in info["functions"]] == ["shop.on_push"]
    assert info["trigger_types"] == []
    assert [r["id"] for r in info["registered_triggers"]] == ["b-1"]
    provides = await consumer.result_of("engine::workers::info", {"name": "hooks-provider"})
    assert provides["trigger_types"] == [
        {"id": TYPE, "namespace": "default", "worker_name": "hooks-provider", "description": "Webhooks"}
    ]
    by_id = await consumer.result_of("engine::workers::info", {"name": provider.worker_id})
    assert by_id["worker"]["name"] == "hooks-provider"
    missing = await consumer.call("engine::workers::info", {"name": "nobody"})
    assert missing["error"]["code"] == "NOT_FOUND"


async def test_workers_info_names_the_candidates_when_a_name_is_shared(live_engine: Engine) -> None:
    first = await named(live_engine, "twin")
    second = await named(live_engine, "twin")
    answer = await first.call("engine::workers::info", {"name": "twin"})
    assert answer["error"]["code"] == "NOT_FOUND"
    assert first.worker_id in answer["error"]["message"] and second.worker_id in answer["error"]["message"]


async def test_workers_list_filters_by_runtime_and_status(live_engine: Engine) -> None:
    node = await named(live_engine, "Front-End", runtime="node")
    await named(live_engine, "back", runtime="python")

    async def names(**filters: Any) -> list[str]:
        return sorted(w["name"] for w in (await node.result_of("engine::workers::list", filters))["workers"])

    assert await names(runtime="node") == ["Front-End"]
    assert await names(search="front") == ["Front-End"]  # case-insensitive
    assert await names(status="connected") == ["Front-End", "back"]
    assert await names(status="disconnected") == []
