"""A module as its own worker process (``iii worker state``) next to an engine that runs no modules: the same
functions and trigger type, served over the worker protocol."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from iii import InitOptions, register_worker
from iii.testing import EngineProcess


def wait_for_function(client: Any, function_id: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listing = client.trigger({"function_id": "engine::functions::list", "payload": {}})
        if any(entry["function_id"] == function_id for entry in listing["functions"]):
            return
    raise AssertionError(f"{function_id} was not registered within {timeout_s} s")


@contextmanager
def module_worker(module_name: str) -> Iterator[EngineProcess]:
    """An engine that runs no modules, and ``iii worker <module_name>`` connected to it (stopped with SIGTERM
    afterwards, which must end it cleanly)."""
    with (
        EngineProcess(["--modules", ""]) as engine,
        tempfile.TemporaryDirectory(prefix=f"iii-{module_name}-worker-") as data_dir,
    ):
        module = subprocess.Popen(
            [sys.executable, "-m", "iii", "worker", module_name, "--url", engine.url, "--data-dir", data_dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            yield engine
        finally:
            module.send_signal(signal.SIGTERM)
            _, errors = module.communicate(timeout=15)
        assert module.returncode == 0, errors


def test_the_state_module_serves_as_its_own_worker() -> None:
    with module_worker("state") as engine, register_worker(engine.url, InitOptions(worker_name="user")) as client:
        wait_for_function(client, "state::set")
        events: queue.Queue[Any] = queue.Queue()
        client.register_function("user.on_change", events.put)
        client.register_trigger({"type": "state", "function_id": "user.on_change", "config": {"scope": "s"}})
        wait_for_binding(client, "user.on_change")
        set_result = client.trigger(
            {"function_id": "state::set", "payload": {"scope": "s", "key": "k", "value": {"n": 1}}}
        )
        assert set_result == {"old_value": None, "new_value": {"n": 1}}
        assert client.trigger({"function_id": "state::get", "payload": {"scope": "s", "key": "k"}}) == {"n": 1}
        event = events.get(timeout=10)
        assert (event["event_type"], event["key"], event["new_value"]) == ("state:created", "k", {"n": 1})


def test_the_stream_module_serves_as_its_own_worker() -> None:
    """Its calls to custom streams' functions go over the protocol too: an absent one means the backend."""
    with module_worker("stream") as engine, register_worker(engine.url, InitOptions(worker_name="user")) as client:
        wait_for_function(client, "stream::set")
        events: queue.Queue[Any] = queue.Queue()
        client.register_function("user.on_change", events.put)
        client.register_trigger({"type": "stream", "function_id": "user.on_change", "config": {"stream_name": "s"}})
        wait_for_binding(client, "user.on_change")
        item = {"stream_name": "s", "group_id": "g", "item_id": "i"}
        set_result = client.trigger({"function_id": "stream::set", "payload": {**item, "data": {"n": 1}}})
        assert set_result == {"old_value": None, "new_value": {"n": 1}}
        assert client.trigger({"function_id": "stream::get", "payload": item}) == {"n": 1}
        event = events.get(timeout=10)
        assert (event["streamName"], event["id"], event["event"]) == ("s", "i", {"type": "create", "data": {"n": 1}})
        client.register_function("stream::get(custom)", lambda data: {"custom": data["item_id"]})
        wait_for_function(client, "stream::get(custom)")
        custom = {**item, "stream_name": "custom"}
        assert client.trigger({"function_id": "stream::get", "payload": custom}) == {"custom": "i"}


def wait_for_binding(client: Any, function_id: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listing = client.trigger({"function_id": "engine::registered-triggers::list", "payload": {}})
        if any(r["function_id"] == function_id and r["status"] == "active" for r in listing["registered_triggers"]):
            return
    raise AssertionError(f"the binding of {function_id} was not active within {timeout_s} s")


@pytest.mark.parametrize("module", ["http_functions", "observability"])
def test_a_module_of_the_engine_alone_says_it_runs_inside_the_engine_only(module: str) -> None:
    """A worker can neither serve the functions other workers register (``http_functions``) nor receive their
    telemetry (``observability``): ``iii worker MODULE`` says so and exits, instead of serving nothing."""
    with EngineProcess(["--modules", ""]) as engine:
        completed = subprocess.run(
            [sys.executable, "-m", "iii", "worker", module, "--url", engine.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert completed.returncode == 1
    assert "runs inside the engine only" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_the_queue_module_serves_as_its_own_worker_and_provides_enqueue() -> None:
    """The engine only routes an enqueue to ``engine::queue::enqueue``: served by ``iii worker queue`` (as the
    reference's standalone queue worker), the enqueue answers a receipt and the function gets the message."""
    with module_worker("queue") as engine, register_worker(engine.url, InitOptions(worker_name="user")) as client:
        wait_for_function(client, "iii::durable::publish")  # engine::* are not listed
        jobs: queue.Queue[Any] = queue.Queue()
        client.register_function("user.job", jobs.put)
        wait_for_function(client, "user.job")
        action = {"type": "enqueue", "queue": "default"}
        answer = client.trigger({"function_id": "user.job", "payload": {"n": 1}, "action": action})
        assert set(answer) == {"messageReceiptId"}
        assert jobs.get(timeout=10) == {"n": 1}
