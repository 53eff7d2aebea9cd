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
import websockets

from iii.engine import Engine, EngineConfig
from iii.engine.cluster import CHANGES_CHANNEL, FUNCTIONS_KEY, PREFIX, Cluster
from iii.engine.links import EngineLink
from iii.protocol import close_codes
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
        # B reads it too and claims svc::echo again; A reads that claim after the announcement.
        await eventually(lambda: {"op": "add", "function_id": "svc::echo", "engine_id": "B"} in applied, 5)
        assert await registry.hget(FUNCTIONS_KEY, "svc::echo") == b"B"
        await registry.aclose()
        assert removed == []
        await served_over_the_link(caller, server)
    finally:
        for cluster in clusters:
            await cluster.stop()


async def test_a_worker_that_registered_what_another_engine_holds_stands_by_for_it(
    start_engine: StartEngine, redis_server: RedisServer
) -> None:
    """B's worker registered svc::one before B joined, while A's worker held it in the cluster: B's calls go to
    A's worker, B's worker stands by, and serves everyone once A's worker leaves."""
    a, b = await start_engine(), await start_engine()
    cluster_a = Cluster(a.core, redis_server.url, "A", url(a))
    cluster_b = Cluster(b.core, redis_server.url, "B", url(b))
    await cluster_a.start()
    try:
        first = await RawWorker.connect(url(a))
        await first.register("svc::one")
        second = await RawWorker.connect(url(b))
        await second.register("svc::one")  # B is not in the cluster yet: its own worker serves it there
        await cluster_b.start()

        def routed_to_a() -> bool:
            entry = b.core.functions.get("svc::one")
            return entry is not None and isinstance(entry.owner, EngineLink)

        await eventually(routed_to_a, 5, "B routes svc::one to A")
        caller = await RawWorker.connect(url(b))
        await caller.invoke("svc::one", {})
        await first.serve_one(lambda d: "from A")
        assert (await caller.recv_type("invocationresult"))["result"] == "from A"

        await first.close()  # A's worker leaves: B's worker takes over, and A learns it
        await eventually(
            lambda: (entry := a.core.functions.get("svc::one")) is not None and isinstance(entry.owner, EngineLink),
            5,
            "A routes svc::one to B",
        )
        from_a = await RawWorker.connect(url(a))
        await from_a.invoke("svc::one", {})
        await second.serve_one(lambda d: "from B")
        assert (await from_a.recv_type("invocationresult"))["result"] == "from B"
    finally:
        await cluster_a.stop()
        await cluster_b.stop()


async def test_redis_url_joins_the_cluster_and_the_metrics_show_it(
    start_engine: StartEngine, redis_server: RedisServer
) -> None:
    a = await start_engine(modules="", redis_url=redis_server.url)
    b = await start_engine(modules="", redis_url=redis_server.url)
    assert b.cluster is not None and b.cluster.advertise_url == url(b)  # the default: its own address
    server = await RawWorker.connect(url(b))
    await server.send({"type": "registerfunction", "id": "svc::metered", "description": "counts things"})
    await eventually(lambda: a.core.functions.get("svc::metered") is not None, 5, "svc::metered known on A")
    caller = await RawWorker.connect(url(a))
    listed = await caller.call("engine::functions::list", {})
    [row] = [row for row in listed["result"]["functions"] if row["function_id"] == "svc::metered"]
    assert row["description"] == "counts things"
    assert row["worker_name"] == f"engine {b.engine_id} at {url(b)}"
    metrics = a.metrics.render().decode()
    assert "iii_cluster_links 1.0" in metrics
    assert "iii_cluster_remote_functions 1.0" in metrics
    assert "iii_cluster_functions_held 1.0" in b.metrics.render().decode()
    created = await caller.call("engine::channels::create", {})
    channel_id = created["result"]["reader"]["channel_id"]
    assert channel_id.startswith(f"{a.engine_id}.")  # any engine can tell where the channel lives


def test_an_advertised_address_must_be_a_websocket_url() -> None:
    with pytest.raises(ValueError, match="advertise_url"):
        EngineConfig(advertise_url="http://10.0.0.2:49134")
    assert EngineConfig(advertise_url="wss://iii.example:443").advertise_url == "wss://iii.example:443"


async def test_an_end_released_at_another_engine_is_released_at_its_owner(
    start_engine: StartEngine, redis_server: RedisServer
) -> None:
    """A handler on B left the writer it was given untouched; B's SDK releases it at B: the reader on A, the
    channel's engine, learns at once (4004) instead of waiting for the channel's time to live."""
    a = await start_engine(modules="", redis_url=redis_server.url)
    b = await start_engine(modules="", redis_url=redis_server.url)
    creator = await RawWorker.connect(url(a))
    refs = (await creator.call("engine::channels::create", {}))["result"]
    reader = await websockets.connect(
        f"{url(a)}/ws/channels/{refs['reader']['channel_id']}?key={refs['reader']['access_key']}&dir=read"
    )
    holder = await RawWorker.connect(url(b))
    answer = await holder.call("engine::channels::release", {"ends": [refs["writer"]], "reason": "handler returned"})
    assert answer["result"] == {"released": 1}
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(reader.recv(), 5)
    assert reader.close_code == close_codes.WRITER_RELEASED


async def test_engines_present_the_engine_token_to_each_other(
    start_engine: StartEngine, redis_server: RedisServer
) -> None:
    """With --token, links carry it: engines that share the token form one system; one with another token is
    refused by the others (and its functions stay its own)."""
    a = await start_engine(modules="", redis_url=redis_server.url, token="shared-secret")
    b = await start_engine(modules="", redis_url=redis_server.url, token="shared-secret")
    stranger = await start_engine(modules="", redis_url=redis_server.url, token="another-secret")
    bearer = {"additional_headers": {"Authorization": "Bearer shared-secret"}}
    server = await RawWorker.connect(url(b), **bearer)
    await server.register("svc::guarded")
    await eventually(lambda: a.core.functions.get("svc::guarded") is not None, 5, "svc::guarded known on A")
    caller = await RawWorker.connect(url(a), **bearer)
    await caller.invoke("svc::guarded", {})
    await server.serve_one(lambda d: "ok")
    assert (await caller.recv_type("invocationresult"))["result"] == "ok"

    outsider = await RawWorker.connect(url(stranger), additional_headers={"Authorization": "Bearer another-secret"})
    await outsider.register("svc::outsider")
    assert stranger.cluster is not None
    assert a.cluster is not None
    cluster_a, cluster_stranger = a.cluster, stranger.cluster
    # A heard of svc::outsider and tried to link to its engine: refused, it watches that engine instead.
    await eventually(lambda: stranger.engine_id in cluster_a._watching, 5, "A refused by the stranger")
    missing = await caller.call("svc::outsider", {})
    assert missing["error"]["code"] == "function_not_found"
    await eventually(lambda: b.engine_id in cluster_stranger._watching, 5, "the stranger refused by B")
    assert stranger.core.functions.get("svc::guarded") is None


async def test_an_engine_taken_for_gone_while_alive_claims_its_functions_again(
    start_engine: StartEngine, redis_server: RedisServer
) -> None:
    """After a Redis restart an engine's key can be missing for a moment while its claims are back: another
    engine may then release its functions as a dead engine's. The living engine hears it and claims them again."""
    a = await start_engine(modules="", redis_url=redis_server.url)
    b = await start_engine(modules="", redis_url=redis_server.url)
    assert a.cluster is not None and b.cluster is not None
    server = await RawWorker.connect(url(b))
    await server.register("svc::survivor")

    def routed_to_b() -> bool:
        entry = a.core.functions.get("svc::survivor")
        return entry is not None and isinstance(entry.owner, EngineLink)

    await eventually(routed_to_b, 5, "svc::survivor known on A")
    inspector = aioredis.from_url(redis_server.url)
    try:
        async with inspector.pubsub() as changes:
            await changes.subscribe("iii:cluster:changes")
            await inspector.delete(f"iii:cluster:engine:{b.engine_id}")
            await a.cluster._purge(b.engine_id)  # what A does when it finds B's key missing
            async with asyncio.timeout(5):  # B hears it and claims the function again
                async for message in changes.listen():
                    change = json.loads(message["data"]) if message["type"] == "message" else {}
                    if change.get("op") == "add" and change.get("function_id") == "svc::survivor":
                        assert change["engine_id"] == b.engine_id
                        break
        assert await inspector.hget("iii:cluster:functions", "svc::survivor") == b.engine_id.encode()
    finally:
        await inspector.aclose()

    # A hears the release and then the claim, in this order: the function comes back there.
    async def serve() -> None:
        while True:
            await server.serve_one(lambda d: "still here")

    serving = asyncio.ensure_future(serve())
    caller = await RawWorker.connect(url(a))
    try:
        async with asyncio.timeout(5):
            while (answer := await caller.call("svc::survivor", {})).get("result") != "still here":
                assert answer["error"]["code"] == "function_not_found"  # only until A has heard the claim
    finally:
        serving.cancel()


async def test_an_engine_leaves_the_cluster_at_once_even_when_stopped_while_joining(
    start_engine: StartEngine, redis_server: RedisServer
) -> None:
    # A cancellation that lands while redis-py connects (the subscription to the announcements) can be lost, and
    # the task then goes on listening: leaving must not wait for it. Stopped after 0..29 steps of the loop (before
    # the fix, about half of these stops hung until cancelled from outside).
    engine = await start_engine()
    for steps in range(30):
        cluster = Cluster(engine.core, redis_server.url, f"E{steps}", url(engine))
        await cluster.start()
        for _ in range(steps):
            await asyncio.sleep(0)
        stopping = asyncio.ensure_future(cluster.stop())
        done, _ = await asyncio.wait([stopping], timeout=5)
        assert done, f"the cluster did not stop within 5 s when stopped {steps} loop steps after it started"
        await stopping


async def test_a_function_held_by_an_engine_that_died_after_its_watch_gave_up_is_claimed_all_the_same(
    start_engine: StartEngine, redis_server: RedisServer
) -> None:
    """Engine Z holds svc::orphan but cannot be reached while its key lives on (a partition), long enough for A's
    watch of it to give up; then Z dies (its key goes) and no one purges it. A, whose worker serves svc::orphan,
    must claim it all the same (before, nothing tried again: it stayed Z's, and A's calls of it went nowhere)."""
    a = await start_engine()
    async with aioredis.from_url(redis_server.url) as registry:
        await registry.set(f"{PREFIX}engine:Z", "ws://127.0.0.1:9")  # nothing listens there
        await registry.hset(FUNCTIONS_KEY, "svc::orphan", "Z")
        cluster_a = Cluster(a.core, redis_server.url, "A", url(a), heartbeat_s=0.2, ttl_s=0.6)
        await cluster_a.start()
        try:
            worker = await RawWorker.connect(url(a))
            await worker.register("svc::orphan")
            await eventually(lambda: "Z" in cluster_a._watching, 5, "A watches Z")
            await eventually(lambda: "Z" not in cluster_a._watching, 10, "A's watch of Z gives up (Z's key lives)")
            await registry.delete(f"{PREFIX}engine:Z")  # Z dies; no one is watching

            async def held_by_a() -> bool:
                return await registry.hget(FUNCTIONS_KEY, "svc::orphan") == b"A"

            async with asyncio.timeout(5):
                while not await held_by_a():  # noqa: ASYNC110 - Redis tells no one of a hash field's change
                    await asyncio.sleep(0.05)
            caller = await RawWorker.connect(url(a))
            await caller.invoke("svc::orphan", {})
            await worker.serve_one(lambda d: "from A")
            assert (await caller.recv_type("invocationresult"))["result"] == "from A"
        finally:
            await cluster_a.stop()
