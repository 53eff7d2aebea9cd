"""Redis stopped and started again under a cluster of two engine processes (issue 15, item 5): calls within an
engine and over the links that exist never fail meanwhile, and what was registered meanwhile converges — after a
Redis that kept its data, and after one that comes back empty."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from iii import III, InitOptions, register_worker
from iii.engine.cluster import FUNCTIONS_KEY
from iii.testing import EngineProcess
from tests.cluster.conftest import TwoEngines
from tests.cluster.polling import call, call_when_known, until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

LOST = "lost the registry's announcements"
"""What an engine logs when its subscription to Redis breaks: the proof that it lived through the outage."""
HEARTBEAT_FAILED = "heartbeat failed"
"""Logged each time an engine cannot refresh its key in Redis (every second)."""
EXPIRED_AFTER = 4
"""Failed heartbeats (one a second) after which an engine's key (3 s to live) has expired."""
PACE_S = 0.005
"""Pause between two calls of a caller: a steady stream that leaves the two cores to the engines."""


@dataclass
class Caller:
    """Calls ``function_ids`` through ``client`` in turn, without end, from a thread of its own; every failure
    is kept."""

    client: III
    function_ids: tuple[str, ...]
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            for function_id in self.function_ids:
                try:
                    call(self.client, function_id, {"from": "caller"})
                    self.answered += 1
                except Exception as error:  # any failure at all is what this test looks for
                    self.failures.append(f"{function_id}: {error!r}")
            self._stop.wait(PACE_S)

    def wait_for_more(self, count: int, timeout_s: float) -> None:
        """Until ``count`` more calls were answered (calls made in the present state, not only before it)."""
        target = self.answered + count
        until(lambda: self.answered >= target or None, timeout_s, f"{count} more answers to {self.function_ids}")


@contextmanager
def calling(*callers: Caller) -> Iterator[None]:
    threads = [threading.Thread(target=caller.run, daemon=True) for caller in callers]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for caller in callers:
            caller._stop.set()
        for thread in threads:
            thread.join(10)


def logged(engine: EngineProcess, text: str) -> int:
    """How many lines of the engine's log contain ``text``."""
    return sum(text in line for line in engine.log_lines())


def wait_for_another(engine: EngineProcess, text: str, seen: int, more: int = 1, timeout_s: float = 10) -> int:
    """Until the engine logged ``text`` ``more`` times more than ``seen``; how many times it has."""
    return until(lambda: found if (found := logged(engine, text)) >= seen + more else None, timeout_s, text)


def wait_until_named(server: RedisServer, function_ids: set[str]) -> None:
    """Until the registry in Redis names every one of ``function_ids`` (the engines told it again)."""
    with redis.Redis.from_url(server.url) as registry:
        until(
            lambda: function_ids <= {key.decode() for key in registry.hkeys(FUNCTIONS_KEY)} or None,
            10,
            f"Redis names {sorted(function_ids)}",
        )


def echo(data: Any) -> Any:
    return data


def test_calls_never_fail_while_redis_is_away_and_registrations_converge_when_it_is_back(
    cluster: TwoEngines,
) -> None:
    a, b, server = cluster.a, cluster.b, cluster.redis
    with (
        register_worker(a.url, InitOptions(worker_name="worker-on-a")) as on_a,
        register_worker(b.url, InitOptions(worker_name="worker-on-b")) as on_b,
    ):
        on_a.register_function("cluster.a", echo)
        on_b.register_function("cluster.b", echo)
        for client in (on_a, on_b):  # each engine reaches the other's function: both links exist
            for function_id in ("cluster.a", "cluster.b"):
                call_when_known(client, function_id, {}, timeout_s=5)
        callers = [Caller(on_a, ("cluster.a", "cluster.b")), Caller(on_b, ("cluster.b", "cluster.a"))]
        with calling(*callers):
            for caller in callers:
                caller.wait_for_more(20, 10)

            # 1. Redis goes away with its data saved, and comes back with it.
            lost_a, lost_b = logged(a, LOST), logged(b, LOST)
            failed_a, failed_b = logged(a, HEARTBEAT_FAILED), logged(b, HEARTBEAT_FAILED)
            server.halt(keep_data=True)
            lost_a, lost_b = wait_for_another(a, LOST, lost_a), wait_for_another(b, LOST, lost_b)
            on_b.register_function("cluster.b.during_outage", echo)  # B has no Redis to tell
            for caller in callers:
                caller.wait_for_more(20, 10)  # calls go on while both engines are without Redis
            assert call(on_b, "cluster.b.during_outage", {"n": 1}) == {"n": 1}  # served on B itself
            # Longer than the engines' keys live: the saved keys have expired when Redis loads them again.
            wait_for_another(a, HEARTBEAT_FAILED, failed_a, more=EXPIRED_AFTER)
            wait_for_another(b, HEARTBEAT_FAILED, failed_b, more=EXPIRED_AFTER)
            server.start()
            back = time.monotonic()
            call_when_known(on_a, "cluster.b.during_outage", {"n": 2}, timeout_s=10)
            print(
                f"\na function registered on B during the outage answered from A {time.monotonic() - back:.2f} s "
                "after Redis came back (with its data)"
            )
            wait_until_named(server, {"cluster.a", "cluster.b", "cluster.b.during_outage"})

            # 2. Redis goes away and comes back empty: the engines tell it everything again.
            server.halt(keep_data=False)
            wait_for_another(a, LOST, lost_a)
            wait_for_another(b, LOST, lost_b)
            on_a.register_function("cluster.a.during_outage", echo)
            for caller in callers:
                caller.wait_for_more(20, 10)
            server.start()
            back = time.monotonic()
            on_b.register_function("cluster.b.after_outage", echo)
            call_when_known(on_b, "cluster.a.during_outage", {"n": 3}, timeout_s=10)
            call_when_known(on_a, "cluster.b.after_outage", {"n": 4}, timeout_s=10)
            print(
                f"functions registered during and after the outage answered across {time.monotonic() - back:.2f} s "
                "after an empty Redis came back"
            )
            everything = {
                "cluster.a",
                "cluster.b",
                "cluster.a.during_outage",
                "cluster.b.during_outage",
                "cluster.b.after_outage",
            }
            wait_until_named(server, everything)
            for caller in callers:
                caller.wait_for_more(20, 10)
            assert call(on_a, "cluster.b.during_outage", {"n": 5}) == {"n": 5}  # known before: still callable

        for caller in callers:
            assert not caller.failures, caller.failures[:10]
            print(f"calls from {caller.client.address}: {caller.answered} answered, none failed")

    for engine in (a, b):  # and they leave the cluster as usual (SIGTERM, exit code 0), not killed after a wait
        assert engine.stop(timeout_s=5) == 0, engine.log_text()[-3000:]
