"""A worker given several engine addresses moves to the next engine when its own goes, and serves there again."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from iii import InitOptions, InvocationError, register_worker
from iii.errors import EngineUnavailableError, UsageError
from iii.sdk.options import ReconnectionConfig, resolve_urls
from iii.testing import EngineProcess

FAST = ReconnectionConfig(initial_delay_ms=50, max_delay_ms=200, jitter_factor=0.0)


def call_until_served(url: str, function_id: str, payload: Any, timeout_s: float) -> tuple[Any, float]:
    """Call ``function_id`` through the engine at ``url`` until it answers; the answer and how long it took."""
    started = time.monotonic()
    with register_worker(url, InitOptions(worker_name="failover-caller")) as caller:
        while True:
            try:
                return caller.trigger({"function_id": function_id, "payload": payload}), time.monotonic() - started
            except InvocationError as error:  # function_not_found until the worker registered again
                if error.code != "function_not_found" or time.monotonic() - started > timeout_s:
                    raise


def unused_address() -> str:
    """A loopback address where nothing listens (a port bound and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


def test_a_worker_moves_to_the_next_engine_when_its_engine_dies_and_serves_there_again() -> None:
    with EngineProcess() as first, EngineProcess() as second:
        options = InitOptions(worker_name="failover-worker", reconnection_config=FAST)
        with register_worker([first.url, second.url], options) as worker:
            worker.register_function("failover.echo", lambda data: {"echo": data, "via": worker.address})
            assert call_until_served(first.url, "failover.echo", 1, 5)[0] == {"echo": 1, "via": first.url}
            first.kill()  # SIGKILL: no goodbye to the worker
            answer, waited = call_until_served(second.url, "failover.echo", 2, 5)
            assert answer == {"echo": 2, "via": second.url}
            assert waited < 5
            assert worker.address == second.url


def test_a_worker_starts_on_the_first_engine_that_answers() -> None:
    with EngineProcess() as engine:
        options = InitOptions(worker_name="failover-start", reconnection_config=FAST)
        with register_worker(f"{unused_address()},{engine.url}", options) as worker:
            worker.register_function("failover.ping", lambda data: "pong")
            assert worker.address == engine.url
            assert call_until_served(engine.url, "failover.ping", None, 5)[0] == "pong"


def test_no_engine_at_any_address_names_them_all() -> None:
    dead = [unused_address(), unused_address()]
    options = InitOptions(
        worker_name="failover-none",
        connect_timeout_s=1,
        reconnection_config=ReconnectionConfig(initial_delay_ms=10, max_delay_ms=10, max_retries=1),
    )
    with pytest.raises(EngineUnavailableError) as raised:
        register_worker(dead, options)
    assert dead[0] in str(raised.value) and dead[1] in str(raised.value)


def test_addresses_are_checked_and_split_at_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_urls("ws://a:1, http://b:2") == ["ws://a:1", "ws://b:2"]
    assert resolve_urls(["ws://a:1"]) == ["ws://a:1"]
    monkeypatch.setenv("III_URL", "ws://c:3,ws://d:4")
    assert resolve_urls(None) == ["ws://c:3", "ws://d:4"]
    with pytest.raises(UsageError, match="must start with ws://"):
        resolve_urls("ws://a:1,b:2")
    with pytest.raises(UsageError, match="names no engine address"):
        resolve_urls(" , ")
