"""Calls across two engine processes of a cluster on a real Redis (issue 15, items 1, 3 and 4), with our SDK's
workers: a function registered on B is callable from A at once; B killed mid-call fails the call at once and
its functions leave A at once; B's workers, given both addresses, serve again from A."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
import redis

from iii import InitOptions, InvocationError, register_worker
from iii.engine.cluster import FUNCTIONS_KEY
from iii.sdk.options import ReconnectionConfig
from tests.cluster.conftest import TwoEngines, engine_id
from tests.cluster.polling import call, call_when_known, until
from tests.interop.processes import tail

pytestmark = pytest.mark.timeout(60)

FAST = ReconnectionConfig(initial_delay_ms=50, max_delay_ms=200, jitter_factor=0.0)
"""Reconnection of B's workers: the default's first second of waiting would be most of what is measured."""


def options(name: str) -> InitOptions:
    return InitOptions(worker_name=name, reconnection_config=FAST)


def test_a_function_registered_on_b_is_callable_from_a_right_after_its_registration(cluster: TwoEngines) -> None:
    with register_worker(cluster.a.url, options("caller-on-a")) as caller, register_worker(cluster.b.url) as server:
        caller.wait_until_connected(10)
        ref = server.register_function("cluster.echo", lambda data: {"echo": data, "engine": "b"})
        assert ref.wait_active(10)  # B acknowledged the registration
        answer, took = call_when_known(caller, "cluster.echo", {"n": 1}, timeout_s=5)
        print(f"\ncluster.echo registered on B: first answer to a call from A after {took * 1000:.1f} ms")
        assert answer == {"echo": {"n": 1}, "engine": "b"}
        assert took < 1.0  # the issue asks for 100 ms; the bound leaves room for a loaded 2-core machine

        assert call(server, "cluster.echo", {"n": 2}) == {"echo": {"n": 2}, "engine": "b"}  # and on B itself
        ref.unregister()  # it leaves B, so it leaves A
        until(lambda: None if served(caller, "cluster.echo") else True, 5, "cluster.echo gone from A")


def served(client: Any, *function_ids: str) -> bool:
    """Whether every one of ``function_ids`` is in the listing of ``client``'s engine."""
    listing = call(client, "engine::functions::list", {})
    return set(function_ids) <= {entry["function_id"] for entry in listing["functions"]}


def test_b_killed_during_a_slow_call_fails_it_at_once_and_its_functions_leave_a(cluster: TwoEngines) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(data: Any) -> str:
        started.set()
        release.wait(30)
        return "too late"

    outcome: dict[str, Any] = {}
    with register_worker(cluster.a.url, options("caller-on-a")) as caller, register_worker(cluster.b.url) as server:
        try:
            server.register_function("cluster.slow", slow)
            server.register_function("cluster.fast", lambda data: "fast")
            until(lambda: served(caller, "cluster.slow", "cluster.fast") or None, 5, "both known on A")
            assert call(caller, "cluster.fast") == "fast"

            def slow_call() -> None:
                try:
                    outcome["result"] = call(caller, "cluster.slow", {}, timeout_s=30)
                except InvocationError as error:
                    outcome["error"] = error
                outcome["at"] = time.monotonic()

            calling = threading.Thread(target=slow_call)
            calling.start()
            assert started.wait(10), "the slow call never reached B's worker"
            killed_at = time.monotonic()
            cluster.b.kill()  # SIGKILL: B says nothing to anyone
            calling.join(10)
            assert not calling.is_alive(), "the call is still waiting 10 s after B died"
            stopped_after = outcome["at"] - killed_at
            print(f"\nthe slow call failed {stopped_after * 1000:.0f} ms after B was killed")
            assert "error" in outcome, outcome
            assert outcome["error"].code == "invocation_stopped"
            assert stopped_after <= 1.5  # the issue asks for 1 s; room for a loaded machine

            # New calls fail at once, from now until B's key has expired and its entries are purged from Redis:
            # no call waits on the dead engine meanwhile.
            slowest: list[float] = []
            with redis.Redis.from_url(cluster.redis.url) as registry:

                def purged() -> bool | None:
                    slowest.append(
                        max(refused_at_once(caller, "cluster.fast"), refused_at_once(caller, "cluster.slow"))
                    )
                    return registry.hget(FUNCTIONS_KEY, "cluster.fast") is None or None

                until(purged, 10, "B's functions purged from Redis")
            print(
                f"{len(slowest) * 2} new calls of B's functions from A until B's entries were purged from Redis "
                f"({(time.monotonic() - killed_at) * 1000:.0f} ms after the kill): each failed at once, the slowest "
                f"after {max(slowest) * 1000:.1f} ms, the first after {slowest[0] * 1000:.1f} ms"
            )
        finally:
            release.set()


def refused_at_once(client: Any, function_id: str) -> float:
    """Call ``function_id`` and check that it fails with ``function_not_found`` at once; how long it took."""
    asked = time.monotonic()
    with pytest.raises(InvocationError) as refused:
        call(client, function_id, timeout_s=10)
    took = time.monotonic() - asked
    assert refused.value.code == "function_not_found", refused.value
    assert took < 0.5  # at once, not after a deadline
    return took


def test_b_s_workers_move_to_a_and_answer_again_within_5_s(cluster: TwoEngines) -> None:
    with (
        register_worker(cluster.a.url, options("caller-on-a")) as caller,
        register_worker([cluster.b.url, cluster.a.url], options("worker-of-b")) as first,
        register_worker([cluster.b.url, cluster.a.url], options("worker-of-b-2")) as second,
    ):
        first.register_function("cluster.first", lambda data: {"via": first.address})
        second.register_function("cluster.second", lambda data: {"via": second.address})
        for function_id in ("cluster.first", "cluster.second"):
            assert call_when_known(caller, function_id, None, timeout_s=5)[0] == {"via": cluster.b.url}

        killed_at = time.monotonic()
        cluster.b.kill()
        for function_id in ("cluster.first", "cluster.second"):
            answer, _ = call_when_known_after_loss(caller, function_id, timeout_s=10)
            assert answer == {"via": cluster.a.url}
        took = time.monotonic() - killed_at
        print(f"\nB's two workers answered again from A {took * 1000:.0f} ms after B was killed")
        assert took < 5.0
        assert first.address == second.address == cluster.a.url

        # Once B's key expires, A holds them in the registry: an engine that joins later finds them at A.
        a_id = engine_id(cluster.a)
        with redis.Redis.from_url(cluster.redis.url) as registry:

            def held_by_a() -> bool | None:
                holders = registry.hmget(FUNCTIONS_KEY, ["cluster.first", "cluster.second"])
                return holders == [a_id.encode()] * 2 or None

            until(held_by_a, 10, "cluster.first and cluster.second held by A in Redis")
        print(f"held by A in Redis {(time.monotonic() - killed_at) * 1000:.0f} ms after B was killed")


def call_when_known_after_loss(client: Any, function_id: str, timeout_s: float) -> tuple[Any, float]:
    """:func:`call_when_known`, where a call that was on its way over the lost link (``invocation_stopped``)
    is tried again too."""
    started = time.monotonic()

    def attempt() -> tuple[Any] | None:
        try:
            return (call(client, function_id),)
        except InvocationError as error:
            if error.code not in ("function_not_found", "invocation_stopped"):
                raise
            return None

    (answer,) = until(attempt, timeout_s, f"{function_id} answered again")
    return answer, time.monotonic() - started


def test_b_frozen_during_a_slow_call_is_dropped_after_the_link_s_ping_timeout_and_serves_again_when_it_wakes(
    cluster: TwoEngines,
) -> None:
    """SIGSTOP, not SIGKILL: B's sockets stay open and nothing says it is gone; only the link's pings can tell.
    Once B's key has expired, A releases its functions; when B wakes up, they are B's again."""
    started, release = threading.Event(), threading.Event()

    def slow(data: Any) -> str:
        started.set()
        release.wait(30)
        return "too late"

    outcome: dict[str, Any] = {}
    with register_worker(cluster.a.url, options("caller-on-a")) as caller, register_worker(cluster.b.url) as server:
        try:
            server.register_function("cluster.slow", slow)
            server.register_function("cluster.fast", lambda data: "fast")
            until(lambda: served(caller, "cluster.slow", "cluster.fast") or None, 5, "both known on A")

            def slow_call() -> None:
                try:
                    outcome["result"] = call(caller, "cluster.slow", {}, timeout_s=30)
                except InvocationError as error:
                    outcome["error"] = error
                outcome["at"] = time.monotonic()

            calling = threading.Thread(target=slow_call)
            calling.start()
            assert started.wait(10), "the slow call never reached B's worker"
            frozen_at = time.monotonic()
            os.kill(cluster.b.pid, signal.SIGSTOP)
            try:
                calling.join(10)
                assert not calling.is_alive(), "the call is still waiting 10 s after B froze"
                stopped_after = outcome["at"] - frozen_at
                print(f"\nthe slow call failed {stopped_after * 1000:.0f} ms after B froze")
                assert outcome["error"].code == "invocation_stopped"
                assert stopped_after < 5  # a ping every second, dropped after 2 s of silence
                refused_at_once(caller, "cluster.fast")
                with redis.Redis.from_url(cluster.redis.url) as registry:
                    until(lambda: registry.hget(FUNCTIONS_KEY, "cluster.fast") is None or None, 10, "B purged")
            finally:
                os.kill(cluster.b.pid, signal.SIGCONT)
            woken_at = time.monotonic()
            try:
                answer, _ = call_when_known(caller, "cluster.fast", None, timeout_s=10)
            except AssertionError as error:
                logs = f"--- A:\n{tail(cluster.a.log_text())}\n--- B:\n{tail(cluster.b.log_text())}"
                raise AssertionError(f"{error}\n{logs}") from None
            assert answer == "fast"
            print(
                f"B's function answered calls from A again {(time.monotonic() - woken_at) * 1000:.0f} ms after B woke"
            )
        finally:
            release.set()
