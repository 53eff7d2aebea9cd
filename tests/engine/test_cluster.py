"""Two engines in a cluster on a real Redis: a function served on one is callable from the other."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from iii.engine import Engine
from iii.engine.cluster import CHANGES_CHANNEL, FUNCTIONS_KEY, PREFIX, Cluster
from iii.engine.links import EngineLink
from tests.engine.wire import RawWorker, eventually
from tests.redis_server import RedisServer

StartEngine = Callable[..., Awaitable[Engine]]


def url(engine: Engine) -> str:
    return f"ws://127.0.0.1:{engine.port}"


async def test_a_function_registered_on_b_becomes_callable_from_a(
    start_engine: StartEngine, redis_server: RedisServer
) -> None:
    a, b = await start_engine(), await start_engine()
    clusters = [Cluster(a.core, redis_server.url, "A", url(a)), Cluster(b.core, redis_server.url, "B", url(b))]
    for cluster in clusters:
        await cluster.start()
    try:
        server = await RawWorker.connect(url(b))
        registered = time.monotonic()
        await server.register("svc::echo")

        def known_on_a() -> bool:
            entry = a.core.functions.get("svc::echo")
            return entry is not None and isinstance(entry.owner, EngineLink)

        await eventually(known_on_a, 5, "svc::echo known on A")
        took = time.monotonic() - registered
        print(f"svc::echo callable from A {took * 1000:.1f} ms after its registration on B")
        caller = await RawWorker.connect(url(a))
        invocation_id = await caller.invoke("svc::echo", {"n": 1})
        await server.serve_one(lambda d: {"echo": d["data"]["n"]})
        answer = await caller.recv_type("invocationresult")
        assert answer["invocation_id"] == invocation_id and answer["result"] == {"echo": 1}
        assert took < 1.0, took  # the issue asks for 100 ms; the bound here leaves room for a loaded machine

        await server.close()  # its worker leaves B: the function leaves the cluster
        await eventually(lambda: a.core.functions.get("svc::echo") is None, 5, "svc::echo gone from A")
        gone = await caller.call("svc::echo", {"n": 2})
        assert gone["error"]["code"] == "function_not_found"
    finally:
        for cluster in clusters:
            await cluster.stop()


async def test_the_first_engine_to_serve_a_function_keeps_it(
    start_engine: StartEngine, redis_server: RedisServer
) -> None:
    a, b = await start_engine(), await start_engine()
    clusters = [Cluster(a.core, redis_server.url, "A", url(a)), Cluster(b.core, redis_server.url, "B", url(b))]
    for cluster in clusters:
        await cluster.start()
    try:
        first = await RawWorker.connect(url(a))
        await first.register("svc::one")
        await eventually(lambda: b.core.functions.get("svc::one") is not None, 5, "svc::one known on B")
        second = await RawWorker.connect(url(b))
        await second.register("svc::one")  # B already routes it to A: this worker stands by
        caller = await RawWorker.connect(url(b))
        await caller.invoke("svc::one", {})
        delivery = await first.serve_one(lambda d: "from A")
        assert delivery["function_id"] == "svc::one"
        answer = await caller.recv_type("invocationresult")
        assert answer["result"] == "from A"
    finally:
        for cluster in clusters:
            await cluster.stop()
        await asyncio.sleep(0)


async def test_leaving_ends_even_when_redis_swallows_the_cancellation(
    start_engine: StartEngine, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py may lose a cancellation that lands inside a command (seen with PUBLISH right after Redis came
    back): the command returns as if nothing happened. Leaving the cluster must end all the same, or the engine
    never stops."""
    a = await start_engine()
    cluster = Cluster(a.core, redis_server.url, "A", url(a))
    await cluster.start()
    publishing = asyncio.Event()

    async def publish_swallowing_a_cancellation(*args: Any) -> int:
        publishing.set()
        with contextlib.suppress(asyncio.CancelledError):  # what redis-py does now and then
            await asyncio.sleep(30)
        return 0

    monkeypatch.setattr(cluster._redis, "publish", publish_swallowing_a_cancellation)
    worker = await RawWorker.connect(url(a))
    await worker.register("svc::announced")  # its claim is announced: the publish above
    await asyncio.wait_for(publishing.wait(), 5)
    monkeypatch.undo()  # the release on leaving publishes too, normally
    leaving = asyncio.ensure_future(cluster.stop())
    done, _ = await asyncio.wait([leaving], timeout=5)
    assert leaving in done, "leaving the cluster did not end"


async def clustered_echo(
    start_engine: StartEngine, redis_server: RedisServer
) -> tuple[Engine, list[Cluster], RawWorker, RawWorker]:
    """Engines A and B in a cluster, a worker of B serving ``svc::echo`` (known on A), a caller on A."""
    a, b = await start_engine(), await start_engine()
    clusters = [Cluster(a.core, redis_server.url, "A", url(a)), Cluster(b.core, redis_server.url, "B", url(b))]
    for cluster in clusters:
        await cluster.start()
    server = await RawWorker.connect(url(b))
    await server.register("svc::echo")
    await eventually(lambda: a.core.functions.get("svc::echo") is not None, 5, "svc::echo known on A")
    return a, clusters, server, await RawWorker.connect(url(a))


async def served_over_the_link(caller: RawWorker, server: RawWorker) -> None:
    invocation_id = await caller.invoke("svc::echo", {"n": 1})
    await server.serve_one(lambda d: d["data"]["n"])
    answer = await caller.recv_type("invocationresult")
    assert answer["invocation_id"] == invocation_id and answer["result"] == 1, answer


async def test_an_engine_whose_key_expired_while_its_link_is_up_is_not_purged(
    start_engine: StartEngine, redis_server: RedisServer
) -> None:
    """Redis back with its data after an outage longer than the keys' TTL: B's key has expired, B lives."""
    _a, clusters, server, caller = await clustered_echo(start_engine, redis_server)
    try:
        registry = aioredis.from_url(redis_server.url)
        await registry.delete(f"{PREFIX}engine:B")
        await clusters[0]._reload()  # what A does when its subscription starts again
        assert await registry.hget(FUNCTIONS_KEY, "svc::echo") == b"B"
        await registry.aclose()
        await served_over_the_link(caller, server)
    finally:
        for cluster in clusters:
            await cluster.stop()


async def test_a_linked_engine_announced_gone_keeps_its_functions_and_claims_them_again(
    start_engine: StartEngine, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another engine found B's key expired (Redis was away longer than its TTL) and purged its entries: A,
    linked to B, keeps routing to it, and B claims its functions again."""
    a, clusters, server, caller = await clustered_echo(start_engine, redis_server)
    removed: list[str] = []
    applied: list[dict[str, Any]] = []
    remove, apply = a.core.remove_remote_function, clusters[0]._apply

    def recording_remove(function_id: str, link: EngineLink) -> None:
        removed.append(function_id)
        remove(function_id, link)

    async def recording_apply(change: dict[str, Any]) -> None:
        await apply(change)
        applied.append(change)

    monkeypatch.setattr(a.core, "remove_remote_function", recording_remove)
    monkeypatch.setattr(clusters[0], "_apply", recording_apply)
    try:
        registry = aioredis.from_url(redis_server.url)
        await registry.hdel(FUNCTIONS_KEY, "svc::echo")  # what that engine's purge did
        await registry.publish(CHANGES_CHANNEL, json.dumps({"op": "gone", "engine_id": "B"}))
        # B reads it too and says what it serves; A reads that after the announcement.
        await eventually(lambda: {"op": "serves", "function_ids": ["svc::echo"], "engine_id": "B"} in applied, 5)
        assert await registry.hget(FUNCTIONS_KEY, "svc::echo") == b"B"
        await registry.aclose()
        assert removed == []
        await served_over_the_link(caller, server)
    finally:
        for cluster in clusters:
            await cluster.stop()
