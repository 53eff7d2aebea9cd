"""Progress over server-sent events: a long job reports each step to the browser as it happens.

``GET /jobs/checksum?mib=N`` runs a job (hashing N MiB of generated data, one MiB per step) and streams
its progress as server-sent events through the request's response channel::

    event: progress
    data: {"step": 3, "of": 8, "percent": 37.5}

and finally ``event: done`` with the checksum. Open it in a browser with ``new EventSource(url)``, or::

    python examples/sse_progress.py [ENGINE_URL]
    curl -N "http://127.0.0.1:3111/jobs/checksum?mib=8"

Each event leaves the function as soon as it is written; the engine sends it on at once (chunked), so
the client sees the job advance rather than one late answer. ``ENGINE_URL`` defaults to ``$III_URL``,
else ``ws://127.0.0.1:49134``. The worker prints ``READY {...}`` once its route is served.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from iii import III, HttpRequest, http_response, register_worker

MIB = 1024 * 1024
MAX_MIB = 4096


async def checksum_job(data: dict[str, Any]) -> Any:
    request = HttpRequest.of(data)
    try:
        steps = int(str(request.query_params.get("mib", "8")))
    except ValueError:
        steps = -1
    if not 1 <= steps <= MAX_MIB:
        return http_response({"error": f"mib must be an integer from 1 to {MAX_MIB}"}, status_code=400)
    events = request.response
    await events.headers({"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    digest = hashlib.sha256()
    for step in range(1, steps + 1):
        # The work of one step, off the event loop so other requests go on meanwhile.
        await asyncio.to_thread(digest.update, step.to_bytes(4, "big") * (MIB // 4))
        await events.send_event({"step": step, "of": steps, "percent": round(100 * step / steps, 1)}, "progress")
    await events.send_event({"sha256": digest.hexdigest()}, "done")
    await events.close_async()
    return None


def serve(client: III) -> list[dict[str, Any]]:
    """Register the job and bind it to ``GET /jobs/checksum``; return the route once the engine serves it."""
    client.register_function("jobs.checksum", checksum_job)
    client.register_trigger(
        {"type": "http", "function_id": "jobs.checksum", "config": {"api_path": "/jobs/checksum", "http_method": "GET"}}
    )
    payload = {"function_id": "jobs.checksum"}
    listing = client.trigger({"function_id": "engine::registered-triggers::list", "payload": payload})  # after it
    return [t for t in listing["registered_triggers"] if t["status"] == "active"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Job progress as server-sent events through iii.")
    parser.add_argument("url", nargs="?", help="engine URL (default: $III_URL, else ws://127.0.0.1:49134)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with register_worker(args.url) as client:
        print("READY " + json.dumps({"routes": serve(client)}), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
