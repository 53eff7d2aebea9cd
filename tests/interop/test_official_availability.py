"""A worker on the official Python SDK binds the engine's ``engine::functions-available`` and
``engine::workers-available`` trigger types with the official ``register_trigger`` and is told when another
worker connects, describes itself, registers a function and leaves (``official_python_watcher.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from iii import InitOptions, register_worker
from iii.testing import EngineProcess
from tests.interop.environments import PythonEnv
from tests.interop.processes import WorkerProcess, child_env, engine_complaints, tail

WATCHER = Path(__file__).resolve().parent / "official_python_watcher.py"
EVENT_TIMEOUT_S = 30.0

pytestmark = pytest.mark.timeout(1200)  # includes building the official environment on a cold machine


@pytest.fixture
def watcher(engine: EngineProcess, official_python: PythonEnv) -> Iterator[WorkerProcess]:
    """The official watcher, its two bindings active."""
    argv = [official_python.python, WATCHER]
    with WorkerProcess("official python watcher", argv, cwd=official_python.root, env=child_env(engine)) as process:
        try:
            process.wait_ready(60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- engine log:\n{tail(engine.log_text())}") from None
        yield process


def wait_for_event(watcher: WorkerProcess, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The next event the watcher printed that ``matches`` (the ones before it are skipped)."""
    while True:
        event = watcher.wait_ready(EVENT_TIMEOUT_S, prefix="EVENT ")
        if matches(event):
            return event


def test_an_official_worker_is_told_of_workers_and_functions_coming_and_going(
    engine: EngineProcess, watcher: WorkerProcess
) -> None:
    newcomer = register_worker(engine.url, InitOptions(worker_name="interop-newcomer"))
    try:
        newcomer.register_function("interop.new.fn", lambda data: data)
        newcomer.trigger({"function_id": "engine::functions::list", "payload": {}})  # connected and registered
        worker_id = newcomer.worker_id
        assert worker_id is not None
        for event in ("worker_connected", "worker_metadata_updated"):
            wait_for_event(watcher, lambda e, event=event: e == {"event": event, "worker_id": worker_id})
        added = wait_for_event(watcher, lambda e: "interop.new.fn" in e.get("function_ids", []))
        assert added["event"] == "functions_changed"
        assert {"interop.watch.functions", "interop.watch.workers"} <= set(added["function_ids"])
    finally:
        newcomer.shutdown()
    wait_for_event(watcher, lambda e: e == {"event": "worker_disconnected", "worker_id": worker_id})
    wait_for_event(watcher, lambda e: "function_ids" in e and "interop.new.fn" not in e["function_ids"])
    assert watcher.stop() == 0, watcher.output()
    complaints = engine_complaints(engine)
    assert not complaints, "engine complained:\n" + "\n".join(complaints)
