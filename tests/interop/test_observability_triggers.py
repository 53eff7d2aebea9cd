"""The ``log`` and ``trace`` trigger types with real workers: an official PyPI worker
(``official_python_obs_triggers.py``), an official Node worker (``node/obs_log_trigger.mjs``) and ours bind them
on an engine with its default modules, and get exactly the records and ticks their configs match, from
``engine::log::*`` calls and from the official workers' ``Logger`` over ``/otel``; the official handlers log (with
the ``Logger``, and the Python one through ``engine::log::*`` too) at the level they are bound to, and are never
told of their own lines.

No sleeps: each test waits for what must arrive, then sends a last record (or makes a last call) and waits for
it; deliveries to a binding are in order, so what the binding got before the last one is all it got.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii import III
from iii.errors import InvocationError
from iii.modules.observability.triggers import LOG_PAYLOAD_FIELDS
from iii.testing import EngineProcess
from tests.interop.processes import WorkerProcess, child_env, engine_complaints, tail

WORKER = Path(__file__).resolve().parent / "official_python_obs_triggers.py"
SERVICE = "obs-triggers-python"
WAIT_S = 30.0

pytestmark = pytest.mark.timeout(1200)  # includes building the official environments on a cold machine


@pytest.fixture
def official(request: pytest.FixtureRequest, engine: EngineProcess) -> Iterator[WorkerProcess]:
    """The official worker, bound to ``log`` at level error and to ``trace`` for its own service."""
    root = request.getfixturevalue("official_python").root
    env = child_env(engine, {"OTEL_SERVICE_NAME": SERVICE})
    with WorkerProcess(SERVICE, [root / "bin" / "python", WORKER, "official", "error"], cwd=root, env=env) as worker:
        worker.wait_ready(WAIT_S)
        yield worker


def listed(client: III, bodies: set[str]) -> dict[str, dict[str, Any]]:
    """Ask ``engine::logs::list`` until every one of ``bodies`` is kept; the records by body."""
    deadline = time.monotonic() + WAIT_S
    while True:
        rows = client.trigger({"function_id": "engine::logs::list", "payload": {"limit": 1000}})["logs"]
        by_body = {row["body"]: row for row in rows}
        if bodies <= by_body.keys():
            return by_body
        assert time.monotonic() < deadline, f"never kept: {sorted(bodies - by_body.keys())}"


def records_until(take: Any, last: str) -> list[dict[str, Any]]:
    """The records ``take()`` gives, up to and including the one whose body is ``last``."""
    got: list[dict[str, Any]] = []
    while not got or got[-1]["body"] != last:
        got.append(take())
    return got


def test_log_bindings_get_exactly_the_records_of_their_level_and_never_their_own_lines(
    engine: EngineProcess, client: III, official: WorkerProcess
) -> None:
    """Proves a ``log`` binding of each SDK gets the records of its level from ``engine::log::*`` and from an
    official worker's ``Logger``, in the reference's shape, in order, nothing else; and that a handler logging
    at its own level (with the ``Logger`` and with ``engine::log::*``) does not call itself forever."""
    warnings: queue.Queue[dict[str, Any]] = queue.Queue()

    async def our_sink(record: dict[str, Any]) -> None:
        warnings.put(record)
        invocation = client.current_invocation()  # a line of its own, at its level, in its delivery's trace
        assert invocation is not None and invocation.traceparent is not None
        payload = {"message": f"ours handled {record['body']}", "trace_id": invocation.traceparent.split("-")[1]}
        await client.trigger_async({"function_id": "engine::log::warn", "payload": payload})

    client.register_function("ours.warn-sink", our_sink)
    client.register_trigger({"type": "log", "function_id": "ours.warn-sink", "config": {"level": "warn"}})
    run = uuid.uuid4().hex[:8]
    for level in ("debug", "info", "warn", "error"):
        client.trigger({"function_id": f"engine::log::{level}", "payload": {"message": f"e-{level}-{run}"}})
    lines = [{"level": level, "message": f"l-{level}-{run}"} for level in ("info", "warn", "error")]
    client.trigger({"function_id": "official.emit", "payload": {"lines": lines}})

    handled = {f"handled {body}-{run}" for body in ("e-error", "l-error")}
    handled |= {f"engine handled {body}-{run}" for body in ("e-error", "l-error")}
    handled |= {f"ours handled {body}-{run}" for body in ("e-warn", "l-warn")}
    kept = listed(client, {f"l-{level}-{run}" for level in ("info", "warn", "error")} | handled)
    client.trigger({"function_id": "engine::log::error", "payload": {"message": f"end-{run}"}})
    client.trigger({"function_id": "engine::log::warn", "payload": {"message": f"end-{run}"}})

    def official_record() -> dict[str, Any]:
        return official.expect("GOT", WAIT_S)

    def our_record() -> dict[str, Any]:
        return warnings.get(timeout=WAIT_S)

    details = f"{official.output()}\n{tail(engine.log_text())}"
    got = records_until(official_record, f"end-{run}")
    assert [record["body"] for record in got] == [f"e-error-{run}", f"l-error-{run}", f"end-{run}"], details
    ours = records_until(our_record, f"end-{run}")
    assert [record["body"] for record in ours] == [f"e-warn-{run}", f"l-warn-{run}", f"end-{run}"], details

    # the Logger's line as the official worker got it: the reference's fields, the worker's service and trace
    logger_line = got[1]
    assert list(logger_line) == list(LOG_PAYLOAD_FIELDS), logger_line
    assert (logger_line["severity_number"], logger_line["service_name"]) == (17, SERVICE), logger_line
    assert logger_line["trace_id"] == kept[f"l-error-{run}"]["trace_id"] is not None, logger_line
    assert (got[0]["severity_text"], got[0]["service_name"]) == ("ERROR", "unknown"), got[0]
    # what the handler logged while handling a record is kept, in its delivery's trace, and fired nothing
    for body in handled:
        assert kept[body]["trace_id"] not in (None, logger_line["trace_id"]), kept[body]
    assert not engine_complaints(engine), tail(engine.log_text())


def test_an_official_node_workers_log_binding_gets_its_level_and_never_its_own_lines(
    request: pytest.FixtureRequest, engine: EngineProcess, client: III
) -> None:
    """Proves the same of the official Node SDK: its ``log`` binding gets the records of its level, from
    ``engine::log::*`` and its own ``Logger``, and the line its handler logs at that level fires nothing."""
    request.getfixturevalue("node_env")
    scripts = request.getfixturevalue("node_scripts")
    service = "obs-triggers-node"
    env = child_env(engine, {"OTEL_SERVICE_NAME": service})
    argv = ["node", scripts / "obs_log_trigger.mjs", "node", "warn"]
    with WorkerProcess(service, argv, cwd=scripts, env=env) as worker:
        worker.wait_ready(WAIT_S)
        run = uuid.uuid4().hex[:8]
        client.trigger({"function_id": "engine::log::warn", "payload": {"message": f"e-warn-{run}"}})
        client.trigger({"function_id": "engine::log::error", "payload": {"message": f"e-error-{run}"}})
        lines = [{"level": level, "message": f"l-{level}-{run}"} for level in ("info", "warn")]
        client.trigger({"function_id": "node.emit", "payload": {"lines": lines}})
        handled = {f"handled e-warn-{run}", f"handled l-warn-{run}"}
        kept = listed(client, {f"l-info-{run}", f"l-warn-{run}"} | handled)
        client.trigger({"function_id": "engine::log::warn", "payload": {"message": f"end-{run}"}})

        got = records_until(lambda: worker.expect("GOT", WAIT_S), f"end-{run}")
        details = f"{worker.output()}\n{tail(engine.log_text())}"
        assert [record["body"] for record in got] == [f"e-warn-{run}", f"l-warn-{run}", f"end-{run}"], details
        assert list(got[1]) == list(LOG_PAYLOAD_FIELDS), got[1]
        assert (got[1]["severity_number"], got[1]["service_name"]) == (13, service), got[1]
        for body in handled:
            assert kept[body]["trace_id"] not in (None, got[1]["trace_id"]), kept[body]
        assert not engine_complaints(engine), tail(engine.log_text())


def test_trace_bindings_tick_with_the_matching_traces_coalesced_and_never_for_their_own_spans(
    engine: EngineProcess, client: III, official: WorkerProcess
) -> None:
    """Proves a ``trace`` binding gets ``{trace_ids}`` ticks naming the traces with span activity that match its
    config (the official worker's service; ours: status error), and that the ticks' own deliveries (whose
    handler logs, and whose spans are of the worker's service) never tick again."""
    ticks: queue.Queue[dict[str, Any]] = queue.Queue()
    client.register_function("ours.error-traces", ticks.put)
    client.register_trigger({"type": "trace", "function_id": "ours.error-traces", "config": {"status": "ERROR"}})
    client.trigger({"function_id": "engine::health::check", "payload": {}})  # our binding is in place

    emitted = {client.trigger({"function_id": "official.emit", "payload": {"lines": []}})["trace_id"] for _ in "ab"}
    failed = {_failed_trace(client)}
    wanted = emitted | failed
    official_ticks = _ticks_until(lambda: official.expect("TICK", WAIT_S), wanted)
    our_ticks = _ticks_until(lambda: ticks.get(timeout=WAIT_S), failed)
    coalesced = len(official_ticks) < len(wanted)  # the three calls' spans land within one window or two

    last_emitted = client.trigger({"function_id": "official.emit", "payload": {"lines": []}})["trace_id"]
    last_failed = _failed_trace(client)
    official_ticks += _ticks_until(lambda: official.expect("TICK", WAIT_S), {last_emitted, last_failed})
    our_ticks += _ticks_until(lambda: ticks.get(timeout=WAIT_S), {last_failed})

    details = f"{official_ticks}\n{our_ticks}\n{official.output()}\n{tail(engine.log_text())}"
    official_ids = [trace_id for tick in official_ticks for trace_id in tick["trace_ids"]]
    assert set(official_ids) == wanted | {last_emitted, last_failed}, details
    assert len(official_ids) == len(set(official_ids)), f"a trace ticked twice: its own delivery fired it\n{details}"
    assert coalesced, details
    assert {trace_id for tick in our_ticks for trace_id in tick["trace_ids"]} == failed | {last_failed}, details
    for tick in official_ticks + our_ticks:
        assert tick["trace_ids"] == sorted(set(tick["trace_ids"])), details
    assert not engine_complaints(engine), tail(engine.log_text())


def _failed_trace(client: III) -> str:
    """Call the official worker's failing function; the trace id its error names."""
    try:
        client.trigger({"function_id": "official.fail", "payload": {}})
    except InvocationError as failure:
        return failure.message.split()[-1]
    raise AssertionError("official.fail did not fail")


def _ticks_until(take: Any, trace_ids: set[str]) -> list[dict[str, Any]]:
    """The ticks ``take()`` gives until every one of ``trace_ids`` was named."""
    got: list[dict[str, Any]] = []
    missing = set(trace_ids)
    while missing:
        tick = take()
        got.append(tick)
        missing -= set(tick["trace_ids"])
    return got
