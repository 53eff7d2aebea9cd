"""The OFFICIAL Python SDK (PyPI ``iii-sdk`` 0.25.0) on one engine of a cluster, run by ``test_official_sdks.py``
in the official venv (it imports the official ``iii`` package, not ours).

``III_URL=ws://... python official_python.py serve FUNCTION_ID`` registers ``FUNCTION_ID`` (it answers
``{"echo": data, "sdk": "official-python"}``), asks its engine (``engine::functions::list``) until it is listed,
prints ``READY {}``, serves until its stdin closes, then shuts the client down and exits 0.

``III_URL=ws://... python official_python.py call FUNCTION_ID < payload.json`` calls it once and prints
``RESULT {json}`` (exit 0) or ``ERROR {"code": ..., "message": ...}`` (exit 1).
"""

from __future__ import annotations

import json
import os
import sys

from iii import InitOptions, InvocationError, register_worker

MAX_LIST_ATTEMPTS = 200


def serve(function_id: str) -> int:
    iii = register_worker(os.environ["III_URL"], InitOptions(worker_name=f"cluster-python-{os.getpid()}"))
    iii.register_function(function_id, lambda data: {"echo": data, "sdk": "official-python"})
    for _ in range(MAX_LIST_ATTEMPTS):
        listed = iii.trigger({"function_id": "engine::functions::list", "payload": {}, "timeout_ms": 10_000})
        if function_id in {entry["function_id"] for entry in listed["functions"]}:
            break
    else:
        print(f"FATAL {function_id} not listed by the engine", flush=True)
        iii.shutdown()
        return 1
    print("READY {}", flush=True)
    sys.stdin.read()  # the test closes our stdin to stop us
    iii.shutdown()
    return 0


def call(function_id: str) -> int:
    iii = register_worker(os.environ["III_URL"], InitOptions(worker_name=f"cluster-python-caller-{os.getpid()}"))
    try:
        result = iii.trigger(
            {"function_id": function_id, "payload": json.loads(sys.stdin.read()), "timeout_ms": 10_000}
        )
        print("RESULT " + json.dumps(result), flush=True)
        code = 0
    except InvocationError as error:
        print("ERROR " + json.dumps({"code": error.code, "message": error.message}), flush=True)
        code = 1
    iii.shutdown()
    return code


if __name__ == "__main__":
    mode, function_id = sys.argv[1:3]
    sys.exit(serve(function_id) if mode == "serve" else call(function_id))
