"""A worker on the OFFICIAL Python SDK (PyPI ``iii-sdk`` 0.25.0) that binds functions to the engine modules'
trigger types and calls functions on request, for ``test_official_modules.py``.

Usage: ``III_URL=ws://... <official venv>/bin/python official_python_modules.py PLAN_JSON``. It is not imported
by pytest (it imports the official ``iii`` package, not ours). ``PLAN_JSON`` is
``{"worker_name": str, "bindings": [{"function_id", "type", "config"}, ...]}``: for each binding it registers
the function (once per id) with the official ``register_function`` and binds it with the official
``register_trigger``. It asks the engine (``engine::registered-triggers::list``) until every binding is active
and, where the engine tells, its topic heard, then prints ``READY {"registered_triggers": [...]}``.

Then, until its stdin closes:

* every call of a bound function prints ``EVENT {"function_id", "data", ...}``, with what the official SDK
  makes of the payload: ``event_type`` (the name of the official ``StateEventType`` member) for a state
  event parsed with the official ``StateEventData`` model, and ``times_ms`` (epoch milliseconds) for the
  payload's ``*_time`` fields parsed with ``datetime.fromisoformat``;
* every stdin line ``{"id", "function_id", "payload", "queue"?}`` is a call made with the official ``trigger``
  (with ``action=TriggerAction.Enqueue(queue=...)`` when the line names a queue); it prints
  ``RESULT {"id", "ok": true, "kind": "value" | "null", "result"}`` or
  ``RESULT {"id", "ok": false, "error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import datetime
from typing import Any

from iii import InitOptions, TriggerAction, register_worker
from iii.errors import InvocationError
from iii.state import StateEventData

MAX_LIST_ATTEMPTS = 200
_print_lock = threading.Lock()


def say(prefix: str, record: dict[str, Any]) -> None:
    """One whole line on stdout (handlers run on the SDK's threads, calls on the main thread)."""
    line = f"{prefix} {json.dumps(record)}\n"
    with _print_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def describe(function_id: str, data: Any) -> dict[str, Any]:
    """The EVENT record of one call: the payload and what the official SDK's types make of it."""
    record: dict[str, Any] = {"function_id": function_id, "data": data}
    if isinstance(data, dict):
        if data.get("type") == "state":
            record["event_type"] = StateEventData.model_validate(data).event_type.name
        times = {name: value for name, value in data.items() if name.endswith("_time") and isinstance(value, str)}
        if times:
            record["times_ms"] = {
                name: datetime.fromisoformat(value).timestamp() * 1000 for name, value in times.items()
            }
    return record


def main() -> int:
    plan = json.loads(sys.argv[1])
    iii = register_worker(os.environ["III_URL"], InitOptions(worker_name=plan["worker_name"]))

    def handler_for(function_id: str) -> Any:
        async def handle(data: Any) -> dict[str, Any]:
            say("EVENT", describe(function_id, data))
            return {}

        return handle

    function_ids = sorted({binding["function_id"] for binding in plan["bindings"]})
    for function_id in function_ids:
        iii.register_function(function_id, handler_for(function_id))
    for binding in plan["bindings"]:
        iii.register_trigger(
            {"type": binding["type"], "function_id": binding["function_id"], "config": binding["config"]}
        )

    rows: list[dict[str, Any]] = []
    for _ in range(MAX_LIST_ATTEMPTS):
        listed = iii.trigger({"function_id": "engine::registered-triggers::list", "payload": {}, "timeout_ms": 10_000})
        rows = [row for row in listed["registered_triggers"] if row["function_id"] in function_ids]
        heard = all(row.get("details", {}).get("subscribed", True) for row in rows)
        if len(rows) == len(plan["bindings"]) and all(row["status"] == "active" for row in rows) and heard:
            break
    else:
        say("FATAL", {"bindings not active": rows})
        iii.shutdown()
        return 1
    say("READY", {"registered_triggers": rows})

    for line in sys.stdin:  # the test closes our stdin to stop us
        command = json.loads(line)
        try:
            request = {"function_id": command["function_id"], "payload": command["payload"], "timeout_ms": 30_000}
            if "queue" in command:
                request["action"] = TriggerAction.Enqueue(queue=command["queue"])
            result = iii.trigger(request)
        except InvocationError as error:
            say("RESULT", {"id": command["id"], "ok": False, "error": {"code": error.code, "message": error.message}})
        else:
            kind = "null" if result is None else "value"
            say("RESULT", {"id": command["id"], "ok": True, "kind": kind, "result": result})
    iii.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
