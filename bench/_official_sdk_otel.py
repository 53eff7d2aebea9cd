"""Official Python SDK workers (PyPI ``iii-sdk``) with their telemetry ON (the SDK's default), run by
``bench/observability.py`` in the official SDK's venv (standard library and the official ``iii`` only).

* ``--role callee`` registers ``bench::echo_async`` and serves it until stdin closes;
* ``--role caller`` calls it, ``--in-flight`` calls at once for ``--seconds`` after a warm-up, printing
  ``{"measuring": true}`` when the warm-up ends and ``{"calls": N, "seconds": S}`` at the end. It is a process
  of its own: the official SDK runs a function registered by the same worker without the engine.

The callee's SDK records a span around each execution of the handler (the caller's records none) and batches
them to the engine's ``/otel`` every 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

from iii import InitOptions, register_worker

FUNCTION = "bench::echo_async"
PAYLOAD = {"id": 1, "name": "observability bench", "tags": ["a", "b", "c"], "value": 3.25}


async def echo(data: Any) -> Any:
    return data


async def calls_for(iii: Any, seconds: float, in_flight: int) -> int:
    """Calls made in ``seconds`` by ``in_flight`` coroutines, each calling in a loop."""
    deadline = time.perf_counter() + seconds
    made = 0

    async def loop() -> None:
        nonlocal made
        while time.perf_counter() < deadline:
            result = await iii.trigger_async({"function_id": FUNCTION, "payload": PAYLOAD})
            if {key: result.get(key) for key in PAYLOAD} != PAYLOAD:  # the SDK adds _caller_worker_id
                raise RuntimeError(f"unexpected result {result!r}")
            made += 1

    await asyncio.gather(*(loop() for _ in range(in_flight)))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--role", choices=["callee", "caller"], required=True)
    args = parser.parse_args()
    iii = register_worker(args.url, InitOptions(worker_name=f"bench-otel-{args.role}-{os.getpid()}"))
    try:
        if args.role == "callee":
            iii.register_function(FUNCTION, echo)
            print(json.dumps({"ready": True}), flush=True)
            sys.stdin.read()  # serve until the driver closes stdin
            return
        deadline = time.monotonic() + 30
        while True:  # until the engine routes the function
            try:
                iii.trigger({"function_id": FUNCTION, "payload": PAYLOAD, "timeout_ms": 2000})
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        asyncio.run(calls_for(iii, args.warmup, args.in_flight))
        print(json.dumps({"measuring": True}), flush=True)
        started = time.perf_counter()
        made = asyncio.run(calls_for(iii, args.seconds, args.in_flight))
        print(json.dumps({"calls": made, "seconds": time.perf_counter() - started}), flush=True)
    finally:
        iii.shutdown()


if __name__ == "__main__":
    main()
