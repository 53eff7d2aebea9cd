"""A relay worker on the OFFICIAL Python SDK (PyPI ``iii-sdk`` 0.25.0), for ``test_sdk_telemetry.py``.

Usage: ``III_URL=ws://... <official venv>/bin/python official_python_relay.py FUNCTION_ID [NEXT_ID]``. It is not
imported by pytest (it imports the official ``iii`` package, not ours). It registers ``FUNCTION_ID``, whose
handler logs a line with the official ``Logger`` and, given ``NEXT_ID``, calls it with the official ``trigger``;
it answers ``{"via": [FUNCTION_ID, ...the next one's via]}``. It asks the engine (``engine::functions::list``)
until the function is listed, prints ``READY {}``, serves until its stdin closes, then shuts down. The SDK
records its spans and sends them and the log lines to the engine's ``/otel`` on its own.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from iii_helpers.observability import Logger

from iii import InitOptions, register_worker

MAX_LIST_ATTEMPTS = 200


def main() -> int:
    function_id = sys.argv[1]
    next_id = sys.argv[2] if len(sys.argv) > 2 else None
    iii = register_worker(os.environ["III_URL"], InitOptions(worker_name=f"relay-python-{os.getpid()}"))
    logger = Logger(service_name="relay-python")

    def relay(data: Any) -> dict[str, Any]:
        logger.info(f"relaying in {function_id}")
        if next_id is None:
            return {"via": [function_id]}
        answer = iii.trigger({"function_id": next_id, "payload": data})
        return {"via": [function_id, *answer["via"]]}

    iii.register_function(function_id, relay)
    for _ in range(MAX_LIST_ATTEMPTS):
        listed = iii.trigger({"function_id": "engine::functions::list", "payload": {}})
        if any(entry["function_id"] == function_id for entry in listed["functions"]):
            break
    else:
        print(f"FATAL {function_id} never listed", flush=True)
        return 1
    print("READY {}", flush=True)
    sys.stdin.read()
    iii.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
