"""A worker on the OFFICIAL Python SDK (PyPI ``iii-sdk`` 0.25.0) bound to the observability module's ``log`` and
``trace`` trigger types, for ``test_observability_triggers.py``.

Usage: ``III_URL=ws://... OTEL_SERVICE_NAME=SERVICE <official venv>/bin/python official_python_obs_triggers.py
PREFIX LEVEL``. It is not imported by pytest (it imports the official ``iii`` package, not ours). It registers:

* ``PREFIX.log-sink``, bound to ``log`` with ``{"level": LEVEL}``: prints ``GOT {record}``, then logs
  ``handled <body>`` at LEVEL with the SDK's ``Logger`` and through ``engine::log::<LEVEL>`` (``engine handled
  <body>``): lines that would fire it again, forever, if the engine let them;
* ``PREFIX.trace-sink``, bound to ``trace`` with ``{"service_name": SERVICE}``: prints ``TICK {"trace_ids"}``
  and calls ``PREFIX.emit`` to log a line (the spans of its delivery, its own and those of the call, are of
  SERVICE: they must not tick it again);
* ``PREFIX.emit`` ``{lines: [{level, message}]}``: logs each line with the ``Logger``; answers the trace id of
  its span (``{"trace_id"}``);
* ``PREFIX.fail``: raises (its span's status is error); the error message is the trace id of its span.

Prints ``READY {}`` once the engine has its bindings, and waits for its stdin to close.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from iii_helpers.observability import Logger
from opentelemetry import trace

from iii import InitOptions, register_worker


def current_trace_id() -> str:
    return format(trace.get_current_span().get_span_context().trace_id, "032x")


def say(prefix: str, value: Any) -> None:
    sys.stdout.write(f"{prefix} {json.dumps(value)}\n")
    sys.stdout.flush()


def main() -> None:
    prefix, level = sys.argv[1:3]
    service = os.environ["OTEL_SERVICE_NAME"]
    iii = register_worker(os.environ["III_URL"], InitOptions(worker_name=service))
    logger = Logger(service_name=service)

    async def log_sink(record: dict[str, Any]) -> dict[str, Any]:
        say("GOT", record)
        getattr(logger, level)(f"handled {record['body']}")
        payload = {"message": f"engine handled {record['body']}"}
        await iii.trigger_async({"function_id": f"engine::log::{level}", "payload": payload})
        return {}

    async def trace_sink(tick: dict[str, Any]) -> dict[str, Any]:
        say("TICK", tick)
        lines = [{"level": "info", "message": f"tick of {len(tick['trace_ids'])}"}]
        await iii.trigger_async({"function_id": f"{prefix}.emit", "payload": {"lines": lines}})
        return {}

    def emit(data: dict[str, Any]) -> dict[str, Any]:
        for line in data["lines"]:
            getattr(logger, line["level"])(line["message"])
        return {"trace_id": current_trace_id()}

    def fail(data: Any) -> None:
        raise RuntimeError(current_trace_id())

    iii.register_function(f"{prefix}.log-sink", log_sink)
    iii.register_function(f"{prefix}.trace-sink", trace_sink)
    iii.register_function(f"{prefix}.emit", emit)
    iii.register_function(f"{prefix}.fail", fail)
    iii.register_trigger({"type": "log", "function_id": f"{prefix}.log-sink", "config": {"level": level}})
    iii.register_trigger({"type": "trace", "function_id": f"{prefix}.trace-sink", "config": {"service_name": service}})
    # the engine reads this connection's messages in order: once it answers, the bindings above are in place
    iii.trigger({"function_id": "engine::health::check", "payload": {}})
    say("READY", {})
    sys.stdin.read()
    iii.shutdown()


if __name__ == "__main__":
    main()
