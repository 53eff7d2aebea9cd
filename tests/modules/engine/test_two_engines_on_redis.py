"""Two engines on one Redis act as one system for the modules: each sees the other's state, hears the other's
publications, and a cron job bound on both fires once per tick."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest

from iii import InitOptions, register_worker
from iii.testing import EngineProcess
from tests.redis_server import RedisServer


@pytest.fixture
def two_engines(redis_server: RedisServer) -> Iterator[tuple[EngineProcess, EngineProcess]]:
    args = ["--redis-url", redis_server.url, "--modules", "state,pubsub,cron"]
    with EngineProcess(args) as first, EngineProcess(args) as second:
        yield first, second


def test_two_engines_see_each_others_state(two_engines: tuple[EngineProcess, EngineProcess]) -> None:
    first, second = two_engines
    with (
        register_worker(first.url, InitOptions(worker_name="on-first")) as one,
        register_worker(second.url, InitOptions(worker_name="on-second")) as two,
    ):
        one.trigger({"function_id": "state::set", "payload": {"scope": "shared", "key": "k", "value": {"n": 1}}})
        assert two.trigger({"function_id": "state::get", "payload": {"scope": "shared", "key": "k"}}) == {"n": 1}
        ops = [{"type": "increment", "path": "n", "by": 1}]
        for client in (one, two) * 10:
            client.trigger({"function_id": "state::update", "payload": {"scope": "shared", "key": "k", "ops": ops}})
        assert one.trigger({"function_id": "state::get", "payload": {"scope": "shared", "key": "k"}}) == {"n": 21}


def test_a_publication_on_one_engine_reaches_subscribers_on_both(
    two_engines: tuple[EngineProcess, EngineProcess],
) -> None:
    first, second = two_engines
    heard: queue.Queue[tuple[str, Any]] = queue.Queue()
    with (
        register_worker(first.url, InitOptions(worker_name="sub-first")) as one,
        register_worker(second.url, InitOptions(worker_name="sub-second")) as two,
    ):
        for name, client in (("first", one), ("second", two)):
            function_id = f"news.{name}"
            client.register_function(function_id, lambda data, name=name: heard.put((name, data)))
            client.register_trigger({"type": "subscribe", "function_id": function_id, "config": {"topic": "news"}})
        wait_for_subscriptions(one)
        wait_for_subscriptions(two)
        one.trigger({"function_id": "publish", "payload": {"topic": "news", "data": {"n": 1}}})
        got = sorted([heard.get(timeout=10), heard.get(timeout=10)])
        assert got == [("first", {"n": 1}), ("second", {"n": 1})]
        with pytest.raises(queue.Empty):  # exactly once each: nothing more arrives
            heard.get(timeout=0.5)


def test_a_cron_job_bound_on_two_engines_fires_once_per_tick(two_engines: tuple[EngineProcess, EngineProcess]) -> None:
    first, second = two_engines
    fires: queue.Queue[tuple[str, str]] = queue.Queue()
    with (
        register_worker(first.url, InitOptions(worker_name="cron-first")) as one,
        register_worker(second.url, InitOptions(worker_name="cron-second")) as two,
    ):
        for name, client in (("first", one), ("second", two)):
            client.register_function("jobs.tick", lambda data, name=name: fires.put((name, data["scheduled_time"])))
            client.register_trigger(
                {"type": "cron", "function_id": "jobs.tick", "config": {"expression": "* * * * * *"}}
            )
        ticks = [fires.get(timeout=10) for _ in range(4)]
        scheduled = [tick for _, tick in ticks]
        assert len(set(scheduled)) == len(scheduled), f"a tick fired twice: {ticks}"


def wait_for_subscriptions(client: Any) -> None:
    """Wait until the engine says its subscribe bindings hear their topic (the Redis subscription is confirmed);
    a publication before that would not reach them, as with any pub/sub."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listing = client.trigger({"function_id": "engine::registered-triggers::list", "payload": {}})
        rows = [row for row in listing["registered_triggers"] if row["trigger_type"] == "subscribe"]
        if rows and all(row.get("details", {}).get("subscribed") for row in rows):
            return
    raise AssertionError("the subscriptions were not confirmed within 10 s")
