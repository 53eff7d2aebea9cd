"""Our SDK's telemetry joins the official SDKs' in one trace: a call that passes through three workers (ours, an
official PyPI worker, an official npm worker) is one trace, each worker's ``execute <function>`` span the child
of its caller's.

The engine may record spans of its own between a caller's span and its callee's (routing a call), so the
structure asserted is ancestry: the callee's parent is the caller's span, or a span that is no function
execution whose parent is (and so on up). Each relay worker logs a line in its handler; ours (with Python
``logging``) must carry its span's ids.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iii import III, InitOptions, register_worker
from iii.testing import EngineProcess
from tests.interop.processes import WorkerProcess, child_env, tail

PYTHON_RELAY = Path(__file__).resolve().parent / "official_python_relay.py"
READY_TIMEOUT_S = 60.0
ARRIVAL_TIMEOUT_S = 10.0
"""How long the spans may take to be listed (the SDKs send every 100 ms)."""

pytestmark = pytest.mark.timeout(1200)  # includes building the official environments on a cold machine

relay_log = logging.getLogger("tests.relay")


@pytest.fixture
def client(engine: EngineProcess) -> Iterator[III]:
    iii = register_worker(engine.url, InitOptions(otel={"enabled": False}))
    try:
        yield iii
    finally:
        iii.shutdown()


def spans_of_trace(client: III, trace_id: str, names: set[str]) -> dict[str, dict[str, Any]]:
    """The spans of ``trace_id`` by id, once every span named in ``names`` is among them."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while True:
        answer = client.trigger(
            {"function_id": "engine::traces::list", "payload": {"trace_id": trace_id, "search_all_spans": True}}
        )
        spans = {span["span_id"]: span for span in answer["spans"]}
        if names <= {span["name"] for span in spans.values()}:
            return spans
        assert time.monotonic() < deadline, f"never listed all of {names}: {answer}"


def first_span(client: III, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while True:
        answer = client.trigger(
            {"function_id": "engine::traces::list", "payload": {"name": name, "search_all_spans": True}}
        )
        if answer["spans"]:
            span: dict[str, Any] = answer["spans"][0]
            return span
        assert time.monotonic() < deadline, f"no span {name} listed"


def called_by(spans: dict[str, dict[str, Any]], callee: dict[str, Any], caller: dict[str, Any] | None) -> bool:
    """Whether ``callee``'s parent is ``caller`` (None: no span of a worker, the call came from outside a handler),
    or a span that is no function execution (the engine's) whose parent is, and so on up."""
    parent_id = callee["parent_span_id"]
    while parent_id != (caller["span_id"] if caller is not None else None):
        parent = spans.get(parent_id) if parent_id is not None else None
        if parent is None or parent["name"].startswith("execute "):
            return False
        parent_id = parent["parent_span_id"]
    return True


@pytest.mark.parametrize("order", [("ours", "python", "node"), ("node", "ours", "python")])
def test_a_call_through_three_workers_is_one_trace_with_each_callee_under_its_caller(
    order: tuple[str, str, str], request: pytest.FixtureRequest, engine: EngineProcess, client: III
) -> None:
    """Proves our SDK continues the trace it is called in (an official caller's ``traceparent``) and passes its own
    span on to the workers it calls, in the official SDKs' framing: the engine lists the three ``execute`` spans
    under one trace id, each under its caller's; our handler's log line carries our span's ids."""
    tag = uuid.uuid4().hex[:8]
    ids = {sdk: f"relay.{sdk}.{tag}" for sdk in order}
    next_of = {order[0]: ids[order[1]], order[1]: ids[order[2]]}
    python_env = request.getfixturevalue("official_python")
    request.getfixturevalue("node_env")
    node_scripts: Path = request.getfixturevalue("node_scripts")

    ours = register_worker(engine.url, InitOptions(worker_name="relay-ours"))

    def relay(data: Any) -> dict[str, Any]:
        relay_log.warning("relaying in %s", ids["ours"])
        via = [ids["ours"]]
        if "ours" in next_of:
            via += ours.trigger({"function_id": next_of["ours"], "payload": data})["via"]
        return {"via": via}

    with contextlib.ExitStack() as stack:
        stack.callback(ours.shutdown)
        assert ours.register_function(ids["ours"], relay).wait_active(10)
        workers = []
        for sdk in ("python", "node"):
            env = child_env(engine, {"OTEL_SERVICE_NAME": f"relay-{sdk}"})
            tail_args = [ids[sdk], *([next_of[sdk]] if sdk in next_of else [])]
            if sdk == "python":
                argv: list[str | Path] = [python_env.python, PYTHON_RELAY, *tail_args]
                cwd = python_env.root
            else:
                argv, cwd = ["node", node_scripts / "relay.mjs", *tail_args], node_scripts
            workers.append(stack.enter_context(WorkerProcess(f"relay-{sdk}", argv, cwd=cwd, env=env)))
        for worker in workers:
            worker.wait_ready(READY_TIMEOUT_S)

        answer = client.trigger({"function_id": ids[order[0]], "payload": {"n": 1}})
        assert answer == {"via": [ids[sdk] for sdk in order]}

        names = {f"execute {ids[sdk]}" for sdk in order}
        trace_id = first_span(client, f"execute {ids[order[0]]}")["trace_id"]
        spans = spans_of_trace(client, trace_id, names)
        details = "\n".join(
            [*(str(span) for span in spans.values()), *(worker.output() for worker in workers), tail(engine.log_text())]
        )
        by_name = {span["name"]: span for span in spans.values() if span["name"] in names}
        executions = [by_name[f"execute {ids[sdk]}"] for sdk in order]
        assert called_by(spans, executions[0], None), details
        assert called_by(spans, executions[1], executions[0]), details
        assert called_by(spans, executions[2], executions[1]), details
        assert all(span["status"] == "ok" for span in executions), details
        assert by_name[f"execute {ids['ours']}"]["service_name"] == "relay-ours", details

        ours_span = by_name[f"execute {ids['ours']}"]
        logs = client.trigger({"function_id": "engine::logs::list", "payload": {"trace_id": trace_id}})["logs"]
        deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
        ours_line = f"relaying in {ids['ours']}"
        while not any(row["body"] == ours_line for row in logs):
            assert time.monotonic() < deadline, f"our log line never listed: {logs}\n{details}"
            logs = client.trigger({"function_id": "engine::logs::list", "payload": {"trace_id": trace_id}})["logs"]
        (line,) = [row for row in logs if row["body"] == ours_line]
        assert line["span_id"] == ours_span["span_id"] and line["severity_text"] == "WARN", details
        assert line["service_name"] == "relay-ours", details
