"""An official PyPI worker's telemetry reaches an OTLP collector through the engine (``--otlp-endpoint``): the
line its handler logs with the SDK's ``Logger`` and the span the SDK records around the call arrive at a real
collector (decoding with opentelemetry-proto), correlated as the engine keeps them.

An in-process engine and collector on ephemeral loopback ports; the worker is ``official_python_telemetry.py``
in its own process (waited on from a thread, so that the engine goes on serving it).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from iii.engine.server import Engine
from tests.interop.environments import PythonEnv
from tests.interop.processes import WorkerProcess
from tests.modules.observability.collector import Collector

PYTHON_WORKER = Path(__file__).resolve().parent / "official_python_telemetry.py"
SERVICE = "telemetry-export"

pytestmark = pytest.mark.timeout(1200)  # includes building the official environment on a cold machine

StartEngine = Callable[..., Awaitable[Engine]]


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    running = await Collector().start()
    yield running
    await running.stop()


async def test_an_official_workers_log_line_and_span_reach_the_collector(
    start_engine: StartEngine, collector: Collector, official_python: PythonEnv
) -> None:
    engine = await start_engine(otlp_endpoint=collector.url)
    function_id, marker = "telemetry.export.greet", f"to the collector {uuid.uuid4().hex}"
    dropped = ("PYTHONPATH", "VIRTUAL_ENV")
    env = {key: value for key, value in os.environ.items() if key not in dropped and not key.startswith("PYTEST_")}
    env |= {"III_URL": engine.url, "PYTHONUNBUFFERED": "1", "OTEL_SERVICE_NAME": SERVICE}
    argv = [official_python.root / "bin" / "python", PYTHON_WORKER, function_id, marker]
    worker = WorkerProcess(SERVICE, argv, cwd=official_python.root, env=env).start()
    try:
        called = await asyncio.to_thread(worker.wait_ready, 60.0, "CALLED ")
        assert called["result"] == {"logged": marker}, worker.output()

        def arrived() -> bool:
            spans = [span for service, span in collector.spans() if span.name == f"execute {function_id}"]
            return marker in collector.bodies() and bool(spans)

        await collector.wait_until(arrived, timeout_s=10.0)
    finally:
        await asyncio.to_thread(worker.stop)
    [record] = [record for record in collector.logs() if record.body.string_value == marker]
    [(service, span)] = [
        (service, span) for service, span in collector.spans() if span.name == f"execute {function_id}"
    ]
    assert service == SERVICE
    assert (record.trace_id, record.span_id) == (span.trace_id, span.span_id)
    assert record.severity_number == 9
    assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
    assert not collector.problems, collector.problems
