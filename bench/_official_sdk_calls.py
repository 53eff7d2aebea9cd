"""Trigger round-trip roles on the OFFICIAL Python SDK (PyPI ``iii-sdk``), run by ``bench/sdk_calls.py``.

This script runs in the official SDK's own venv (``build/interop/py-official``, built by
``tests/interop/environments.py``), so it imports only the standard library, ``_common`` (standard library
only) and the official ``iii`` package. Both roles connect with ``register_worker`` with OpenTelemetry and
metrics reporting off (as ``bench/_official_sdk_roles.py`` does), so that only the call path is measured.
They speak the same JSON-lines protocol as our SDK's roles and measure with the same loops
(``_common.call_loop``, ``_common.sync_call_loop``).

* ``--role callee``: registers ``bench::echo`` (``def``; the official SDK runs each call on a thread of its
  own) and ``bench::echo_async`` (``async def``, on its loop); serves them until stdin closes.
* ``--role caller``: waits for the callee's functions, then runs ``go STYLE FUNCTION CALLS IN_FLIGHT
  WARMUP`` jobs in the official SDK's natural API, where ``trigger`` is blocking only and
  ``trigger_async`` is the awaitable form:

  * ``sync``: ``iii.trigger(request)`` from plain code;
  * ``async``: ``await iii.trigger_async(request)`` inside ``asyncio.run`` (the user's loop);
  * ``handler``: ``await iii.trigger_async(request)`` inside an ``async def`` function of the caller
    (``bench::drive``, triggered once per job from plain code), so the calls start on the SDK's loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from _common import (
    DRIVE_FUNCTION,
    ECHO_ASYNC_FUNCTION,
    ECHO_FUNCTION,
    CallStats,
    emit,
    measured_call_loop,
    run_sdk_role,
    serve_call_jobs,
    serve_echoes,
    sync_call_loop,
    wait_until_served,
)

from iii import InitOptions, register_worker


def official_worker(url: str, role: str) -> Any:
    """A worker connection with the official SDK, OpenTelemetry and metrics reporting off."""
    options = InitOptions(
        worker_name=f"bench-official-{role}-{os.getpid()}", otel={"enabled": False}, enable_metrics_reporting=False
    )
    return register_worker(url, options)


def callee_main(url: str) -> None:
    """Serve both echo functions until stdin closes."""
    serve_echoes(official_worker(url, "callee"))


def caller_main(url: str, timeout_s: float) -> None:
    """Wait for the callee's functions, then run the driver's jobs."""
    iii = official_worker(url, "caller")

    async def drive(job: dict[str, Any]) -> dict[str, Any]:
        stats = await measured_call_loop(
            iii.trigger_async, job["function_id"], job["calls"], job["in_flight"], job["warmup"]
        )
        return stats.as_dict()

    def run(style: str, function_id: str, calls: int, in_flight: int, warmup: int) -> CallStats:
        if style == "sync":
            return sync_call_loop(iii.trigger, function_id, calls, warmup)
        if style == "async":
            return asyncio.run(measured_call_loop(iii.trigger_async, function_id, calls, in_flight, warmup))
        if style != "handler":
            raise ValueError(f"unknown caller style {style!r}")
        job = {"function_id": function_id, "calls": calls, "in_flight": in_flight, "warmup": warmup}
        result = iii.trigger({"function_id": DRIVE_FUNCTION, "payload": job, "timeout_ms": int(timeout_s * 1000)})
        return CallStats(**result)

    try:
        iii.register_function(DRIVE_FUNCTION, drive)
        wait_until_served(iii.trigger, [ECHO_FUNCTION, ECHO_ASYNC_FUNCTION])
        emit("ready")
        serve_call_jobs(run)
    finally:
        iii.shutdown()


def main() -> None:
    """Command line (used by ``bench/sdk_calls.py`` only)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["callee", "caller"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    if args.role == "callee":
        run_sdk_role(lambda: callee_main(args.url), args.timeout)
    else:
        run_sdk_role(lambda: caller_main(args.url, args.timeout), args.timeout)


if __name__ == "__main__":
    main()
