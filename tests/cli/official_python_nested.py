"""A worker on the OFFICIAL Python SDK (PyPI ``iii-sdk`` 0.25.0) whose call crosses two of its functions, for
``test_telemetry_commands.py``: a trace with a parent and a child span, and a log line in each.

Usage: ``III_URL=ws://... <official venv>/bin/python official_python_nested.py PREFIX MARKER``. Not imported by
pytest (it imports the official ``iii`` package, not ours). It registers ``PREFIX.outer``, which logs
``MARKER outer`` and calls ``PREFIX.inner`` through the engine, which logs ``MARKER inner``; it calls
``PREFIX.outer`` once, prints ``CALLED {"result"}`` and waits for its stdin to close. The SDK sends its logs and
spans to the engine's ``/otel`` on its own.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from iii_helpers.observability import Logger

from iii import InitOptions, register_worker


def main() -> None:
    prefix, marker = sys.argv[1:3]
    iii = register_worker(os.environ["III_URL"], InitOptions(worker_name="nested-python"))
    logger = Logger(service_name="nested-python")

    def inner(data: Any) -> dict[str, Any]:
        logger.warn(f"{marker} inner")
        return {"inner": data}

    def outer(data: Any) -> Any:
        logger.info(f"{marker} outer")
        return iii.trigger({"function_id": f"{prefix}.inner", "payload": data})

    iii.register_function(f"{prefix}.inner", inner)
    iii.register_function(f"{prefix}.outer", outer)
    result = iii.trigger({"function_id": f"{prefix}.outer", "payload": {"n": 1}})
    sys.stdout.write(f"CALLED {json.dumps({'result': result})}\n")
    sys.stdout.flush()
    sys.stdin.read()
    iii.shutdown()


if __name__ == "__main__":
    main()
