"""The official SDKs' telemetry reaches the observability module: what a worker logs with the SDK's ``Logger``
and the spans the SDK records around its handlers come back from ``engine::logs::list`` and
``engine::traces::list`` within a second of the call.

Each test starts an engine with its default modules (observability among them) and one official worker
(``official_python_telemetry.py``, or ``node/telemetry.mjs``) that registers a function logging a marker, calls
it once through the engine and says so. Our SDK then asks the engine's functions until the marker's log record
and the handler's span are there (asking again as soon as an answer lacks them; no sleeps), and at most one
second after the call returned.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from iii import III, register_worker
from iii.testing import EngineProcess
from tests.interop.environments import PythonEnv
from tests.interop.processes import WorkerProcess, child_env, engine_complaints, tail

PYTHON_WORKER = Path(__file__).resolve().parent / "official_python_telemetry.py"
CALL_TIMEOUT_S = 60.0
ARRIVAL_S = 1.0
"""How long after the call returned its log record and span must be listed (the SDKs send every 100 ms)."""

pytestmark = pytest.mark.timeout(1200)  # includes building the official environments on a cold machine


def until_found(
    client: III, function_id: str, payload: dict[str, Any], key: str, found: Callable[[dict[str, Any]], bool]
) -> tuple[dict[str, Any], float]:
    """Ask ``function_id`` until a row of its answer's ``key`` list is ``found``; the row and when it was seen
    (``time.monotonic``). Fails after ``ARRIVAL_S`` * 10 (the assertion on the time is the caller's)."""
    deadline = time.monotonic() + ARRIVAL_S * 10
    while True:
        answer = client.trigger({"function_id": function_id, "payload": payload})
        rows = [row for row in answer[key] if found(row)]
        if rows:
            return rows[0], time.monotonic()
        assert time.monotonic() < deadline, f"{function_id} never listed it: {answer}"


def start_worker(sdk: str, engine: EngineProcess, function_id: str, marker: str, cwd: Path) -> WorkerProcess:
    service = f"telemetry-{sdk}"
    env = child_env(engine, {"OTEL_SERVICE_NAME": service})
    if sdk == "python":
        python = cwd / "bin" / "python"
        argv: list[str | Path] = [python, PYTHON_WORKER, function_id, marker]
    else:
        argv = ["node", cwd / "telemetry.mjs", function_id, marker]
    return WorkerProcess(service, argv, cwd=cwd, env=env)


@pytest.mark.parametrize("sdk", ["python", "node"])
def test_an_official_workers_log_lines_and_spans_are_listed_within_a_second(
    sdk: str, request: pytest.FixtureRequest, engine: EngineProcess, client: III
) -> None:
    """Proves a user's ``logger.info(...)`` in an official worker's handler, and the span of that call, are kept
    by the engine and served by the reference's functions, correlated (the log record carries the span's trace)
    and filtered by worker (service name) and trace id."""
    if sdk == "python":
        cwd = request.getfixturevalue("official_python").root
    else:
        request.getfixturevalue("node_env")
        cwd = request.getfixturevalue("node_scripts")
    function_id = f"telemetry.{sdk}.greet"
    marker = f"hello from {sdk} {uuid.uuid4().hex}"
    service = f"telemetry-{sdk}"
    with start_worker(sdk, engine, function_id, marker, cwd) as worker:
        called = worker.wait_ready(CALL_TIMEOUT_S, prefix="CALLED ")
        returned = time.monotonic()
        assert called["result"] == {"logged": marker}, worker.output()

        record, log_seen = until_found(
            client, "engine::logs::list", {"service_name": service}, "logs", lambda row: row["body"] == marker
        )
        span, span_seen = until_found(
            client,
            "engine::traces::list",
            {"search_all_spans": True, "name": f"execute {function_id}", "service_name": service},
            "spans",
            lambda row: True,
        )
        details = f"{record}\n{span}\n{worker.output()}\n{tail(engine.log_text())}"
        assert log_seen - returned <= ARRIVAL_S and span_seen - returned <= ARRIVAL_S, details
        assert record["severity_text"] == "INFO" and record["severity_number"] == 9, details
        assert record["service_name"] == service, details
        assert record["trace_id"] == span["trace_id"] and record["span_id"] == span["span_id"], details
        assert span["end_time_unix_nano"] >= span["start_time_unix_nano"] > 0, details

        by_trace = client.trigger({"function_id": "engine::logs::list", "payload": {"trace_id": span["trace_id"]}})
        assert [row["body"] for row in by_trace["logs"]] == [marker], details
        tree = client.trigger({"function_id": "engine::traces::tree", "payload": {"trace_id": span["trace_id"]}})
        flat = list(_walk(tree["roots"]))
        assert span["span_id"] in {node["span_id"] for node in flat}, tree
        assert not engine_complaints(engine), tail(engine.log_text())


def test_an_engine_stops_without_waiting_out_its_grace_for_an_official_workers_telemetry_socket(
    official_python: PythonEnv,
) -> None:
    """The official SDK keeps its ``/otel`` socket open; the engine closes it on shutdown (1001, going away)
    instead of waiting its whole grace for the worker to leave."""
    grace_s = 60.0
    with EngineProcess(["--shutdown-grace-s", str(grace_s)]) as engine:
        function_id, marker = "telemetry.shutdown.greet", f"before the shutdown {uuid.uuid4().hex}"
        with start_worker("python", engine, function_id, marker, official_python.root) as worker:
            worker.wait_ready(CALL_TIMEOUT_S, prefix="CALLED ")
            iii = register_worker(engine.url)
            try:  # the worker's line listed: its telemetry socket is open
                until_found(iii, "engine::logs::list", {}, "logs", lambda row: row["body"] == marker)
            finally:
                iii.shutdown()
            asked = time.monotonic()
            assert engine.stop(timeout_s=grace_s * 2) == 0, tail(engine.log_text())
            took = time.monotonic() - asked
            assert took < grace_s / 6, f"the engine took {took:.1f} s to stop\n{tail(engine.log_text())}"


def _walk(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in nodes:
        yield node
        yield from _walk(node["children"])
