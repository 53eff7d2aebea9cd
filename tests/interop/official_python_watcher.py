"""A worker on the OFFICIAL Python SDK (PyPI ``iii-sdk`` 0.25.0) watching the engine's own trigger types.

Usage: ``III_URL=ws://... <official venv>/bin/python official_python_watcher.py``. It is not imported by pytest
(it imports the official ``iii`` package, not ours). With the official ``register_trigger`` it binds
``interop.watch.functions`` to ``engine::functions-available`` and ``interop.watch.workers`` to
``engine::workers-available``, asks the engine (``engine::registered-triggers::list``) until both bindings
are active, prints ``READY {...}``, then prints ``EVENT {json}`` for every call it receives (the payload,
with the function ids only for a function list) until its stdin closes.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from iii import InitOptions, register_worker

MAX_LIST_ATTEMPTS = 200
WATCHERS = {
    "interop.watch.functions": "engine::functions-available",
    "interop.watch.workers": "engine::workers-available",
}


def main() -> int:
    iii = register_worker(os.environ["III_URL"], InitOptions(worker_name="interop-watcher"))

    async def on_functions(data: dict[str, Any]) -> None:
        ids = sorted(row["function_id"] for row in data["functions"])
        print("EVENT " + json.dumps({"event": data["event"], "function_ids": ids}), flush=True)

    async def on_workers(data: dict[str, Any]) -> None:
        print("EVENT " + json.dumps(data), flush=True)

    iii.register_function("interop.watch.functions", on_functions)
    iii.register_function("interop.watch.workers", on_workers)
    for function_id, trigger_type in WATCHERS.items():
        iii.register_trigger({"type": trigger_type, "function_id": function_id, "config": {}})

    rows: list[dict[str, Any]] = []
    for _ in range(MAX_LIST_ATTEMPTS):
        listed = iii.trigger({"function_id": "engine::registered-triggers::list", "payload": {}, "timeout_ms": 10_000})
        rows = [row for row in listed["registered_triggers"] if row["function_id"] in WATCHERS]
        if len(rows) == len(WATCHERS) and all(row["status"] == "active" for row in rows):
            break
    else:
        print(f"FATAL bindings not active: {json.dumps(rows)}", flush=True)
        iii.shutdown()
        return 1
    print("READY " + json.dumps({"registered_triggers": rows}), flush=True)

    sys.stdin.read()  # the test closes our stdin to stop us
    iii.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
