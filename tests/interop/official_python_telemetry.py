"""A worker on the OFFICIAL Python SDK (PyPI ``iii-sdk`` 0.25.0) whose handler logs with the SDK's ``Logger``,
for ``test_observability.py``.

Usage: ``III_URL=ws://... <official venv>/bin/python official_python_telemetry.py FUNCTION_ID MARKER``. It is
not imported by pytest (it imports the official ``iii`` package, not ours). It registers ``FUNCTION_ID``, whose
handler logs ``MARKER`` with the official ``Logger`` (inside the span the SDK opens for the call), calls it once
through the engine with the official ``trigger``, prints ``CALLED {"result"}`` and waits for its stdin to close.
The SDK sends its logs and spans to the engine's ``/otel`` on its own (every 100 ms by default).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from iii_helpers.observability import Logger

from iii import InitOptions, register_worker


def main() -> None:
    function_id, marker = sys.argv[1:3]
    iii = register_worker(os.environ["III_URL"], InitOptions(worker_name="telemetry-python"))
    logger = Logger(service_name="telemetry-python")

    def handler(data: Any) -> dict[str, Any]:
        logger.info(marker, {"input": data})
        return {"logged": marker}

    iii.register_function(function_id, handler)
    result = iii.trigger({"function_id": function_id, "payload": {"n": 1}})
    sys.stdout.write(f"CALLED {json.dumps({'result': result})}\n")
    sys.stdout.flush()
    sys.stdin.read()
    iii.shutdown()


if __name__ == "__main__":
    main()
