"""The engine's spans link the official SDK's spans into one trace: a call from one official Python worker to
another through the engine shows as the caller's ``execute`` span, the engine's ``call`` span, the callee's
``execute`` span, parent to child, in one trace.

Two official workers (``official_python_spans.py``): ``spans.outer``, whose handler calls ``spans.inner`` with
the official ``trigger_async`` (so the call carries the handler span's ``traceparent``), and ``spans.inner``. Our
SDK calls ``spans.outer``; the engine's functions are then asked until the trace's four spans are kept (the SDKs
send theirs every 100 ms: asked again as soon as an answer lacks one, no sleeps).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from iii import III, register_worker
from iii.testing import EngineProcess
from tests.interop.environments import PythonEnv
from tests.interop.processes import WorkerProcess, child_env, engine_complaints, tail

WORKER = Path(__file__).resolve().parent / "official_python_spans.py"
READY_TIMEOUT_S = 60.0
ARRIVAL_S = 10.0

pytestmark = pytest.mark.timeout(1200)  # includes building the official environments on a cold machine


def start(engine: EngineProcess, env: PythonEnv, service: str, *args: str) -> WorkerProcess:
    argv: list[str | Path] = [env.root / "bin" / "python", WORKER, *args]
    return WorkerProcess(service, argv, cwd=env.root, env=child_env(engine, {"OTEL_SERVICE_NAME": service}))


def trace_spans(client: III, trace_id: str, names: set[str]) -> dict[str, dict[str, Any]]:
    """The spans of ``trace_id`` by name, once every one of ``names`` is kept (fails after ``ARRIVAL_S``)."""
    deadline = time.monotonic() + ARRIVAL_S
    while True:
        query = {"trace_id": trace_id, "search_all_spans": True, "include_internal": True}
        spans = {
            span["name"]: span
            for span in client.trigger({"function_id": "engine::traces::list", "payload": query})["spans"]
        }
        if names <= spans.keys():
            return spans
        assert time.monotonic() < deadline, f"the trace never had {names - spans.keys()}: {sorted(spans)}"


def spans_named(client: III, name: str) -> list[dict[str, Any]]:
    """The spans named ``name``, once there is one (the SDKs send theirs every 100 ms; fails after ``ARRIVAL_S``)."""
    deadline = time.monotonic() + ARRIVAL_S
    while True:
        query = {"name": name, "search_all_spans": True}
        found = client.trigger({"function_id": "engine::traces::list", "payload": query})["spans"]
        if found:
            return list(found)
        assert time.monotonic() < deadline, f"no span named {name} arrived"


def test_a_call_from_one_official_worker_to_another_is_one_trace_through_the_engine(
    engine: EngineProcess, official_python: PythonEnv
) -> None:
    """Proves the engine's span is the link the official SDK expects between a caller's span and the callee's:
    caller ``execute`` -> engine ``call`` -> callee ``execute``, in one trace, each worker's under its own
    service name and the engine's under ``iii``. The test's own call carries no trace context: the engine
    records no span for it (it joins traces, it does not start them for calls), and the outer handler's span
    is the root."""
    with (
        start(engine, official_python, "spans-inner", "spans.inner") as inner,
        start(engine, official_python, "spans-outer", "spans.outer", "spans.inner") as outer,
    ):
        inner.wait_ready(READY_TIMEOUT_S)
        outer.wait_ready(READY_TIMEOUT_S)
        client = register_worker(engine.url)
        try:
            result = client.trigger({"function_id": "spans.outer", "payload": {"n": 1}})
            assert result == {"at": "spans.outer", "inner": {"at": "spans.inner"}}
            found = spans_named(client, "execute spans.outer")
            assert len(found) == 1, found
            trace_id = found[0]["trace_id"]
            names = {"execute spans.outer", "call spans.inner", "execute spans.inner"}
            spans = trace_spans(client, trace_id, names)
        finally:
            client.shutdown()
        details = f"{spans}\n{outer.output()}\n{inner.output()}\n{tail(engine.log_text())}"
        assert spans.keys() == names, details  # no "call spans.outer": that call was in no trace
        assert spans["execute spans.outer"]["parent_span_id"] is None, details
        chain = ["execute spans.outer", "call spans.inner", "execute spans.inner"]
        for parent, child in itertools.pairwise(chain):
            assert spans[child]["parent_span_id"] == spans[parent]["span_id"], (parent, child, details)
        services = [spans[name]["service_name"] for name in chain]
        assert services == ["spans-outer", "iii", "spans-inner"], details
        call = spans["call spans.inner"]
        assert dict(call["attributes"])["iii.function.kind"] == "user" and call["status"] == "ok", details
        assert (
            spans["execute spans.outer"]["start_time_unix_nano"]
            <= call["start_time_unix_nano"]
            <= spans["execute spans.inner"]["start_time_unix_nano"]
        ), details
        assert not engine_complaints(engine), tail(engine.log_text())
