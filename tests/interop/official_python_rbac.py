"""A worker on the OFFICIAL Python SDK (PyPI ``iii-sdk`` 0.25.0) at the RBAC worker listener, run by
``test_official_rbac.py`` in the official venv (it imports the official ``iii`` package, not ours).

Usage: ``III_RBAC_WORKER_URL=ws://... <official venv>/bin/python official_python_rbac.py '{"token": ...}'``. It
connects with the header ``x-partner-token``, registers ``echo`` with the SDK's own ``register_function``, makes
the calls the plan lists (``"calls": [[function_id, payload], ...]``) with the SDK's ``trigger`` and prints one
``RESULT {json}`` line: each call's result, or its ``InvocationError`` (code, function id, message). Then it
serves calls until its stdin closes, shuts the client down and exits 0.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from iii import InitOptions, InvocationError, register_worker


def main() -> int:
    plan = json.loads(sys.argv[1])
    options = InitOptions(
        worker_name="official-partner", headers={"x-partner-token": plan["token"]}, otel={"enabled": False}
    )
    iii = register_worker(os.environ["III_RBAC_WORKER_URL"], options)
    iii.register_function("echo", lambda data: {"echoed": data, "sdk": "official-python"})
    calls: list[dict[str, Any]] = []
    for function_id, payload in plan["calls"]:
        try:
            calls.append({"ok": True, "result": iii.trigger({"function_id": function_id, "payload": payload})})
        except InvocationError as error:
            calls.append({"ok": False, "code": error.code, "function_id": error.function_id, "message": error.message})
    print("RESULT " + json.dumps({"calls": calls}), flush=True)
    sys.stdin.read()  # the test closes our stdin to stop us
    iii.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
