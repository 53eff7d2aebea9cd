"""Two engines on one Redis act as one system for the modules: each sees the other's state, hears the other's
publications, and a cron job bound on both fires once per tick."""

from __future__ import annotations

from collections.abc import Iterator

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
