"""A worker on the OFFICIAL Python SDK (PyPI ``iii-sdk`` 0.25.0) for ``test_engine_spans.py``: one function, which
calls another worker's function through the engine when given one.

Usage: ``III_URL=ws://... <official venv>/bin/python official_python_spans.py FUNCTION_ID [TARGET_ID]``. It is not
imported by pytest (it imports the official ``iii`` package, not ours). It registers ``FUNCTION_ID``, whose handler
answers ``{"at": FUNCTION_ID}``, or, with ``TARGET_ID``, calls ``TARGET_ID`` with the official ``trigger_async``
(from inside the span the SDK opens for the call, so the call carries its ``traceparent``) and answers
``{"at": FUNCTION_ID, "inner": <its result>}``. It asks the engine until the function is listed, prints ``READY {}``
and serves calls until its stdin closes. The SDK sends its spans to the engine's ``/otel`` on its own.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from iii import InitOptions, register_worker

MAX_LIST_ATTEMPTS = 200


def main() -> int:
    function_id = sys.argv[1]
    target = sys.argv[2] if len(sys.argv) > 2 else None
    iii = register_worker(os.environ["III_URL"], InitOptions(worker_name=f"spans-{function_id}"))

    async def handler(data: Any) -> dict[str, Any]:
        if target is None:
            return {"at": function_id}
        inner = await iii.trigger_async({"function_id": target, "payload": data})
        return {"at": function_id, "inner": inner}

    iii.register_function(function_id, handler)
    for _ in range(MAX_LIST_ATTEMPTS):
        listed = iii.trigger({"function_id": "engine::functions::list", "payload": {}, "timeout_ms": 10_000})
        if any(entry.get("function_id") == function_id for entry in listed.get("functions", [])):
            break
    else:
        print(f"{function_id} was never listed", file=sys.stderr, flush=True)
        return 1
    print("READY " + json.dumps({}), flush=True)
    sys.stdin.read()  # the test closes our stdin to stop us
    iii.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
