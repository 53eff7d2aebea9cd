"""One-way data streaming with ``async def`` handlers: the seed's one-way example on the async API.

``data.sender`` creates a channel, triggers ``data.processor`` with the channel's reader ref and, while the
processor reads, writes the records into the channel as one JSON document and closes it; then it awaits the
processor's statistics. Because writing and reading overlap, the payload may be far larger than the channel's
buffer: ``await writer.write(...)`` simply waits whenever the processor is behind (backpressure).

Run it::

    python examples/one_way_async.py [ENGINE_URL]          # serve both functions until Ctrl-C or SIGTERM
    python examples/one_way_async.py [ENGINE_URL] --demo   # trigger data.sender once, print the result, exit
    python examples/one_way_async.py --only data.processor # serve just one function (another process has the other)

``ENGINE_URL`` defaults to ``$III_URL``, else ``ws://127.0.0.1:49134``. As a worker it prints one line
``READY {"functions": [...]}`` once the engine lists its functions.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any

from iii import III, register_worker
from iii.channels import ChannelReader

iii_client: III
"""The worker connection the handlers use (set by :func:`connect`)."""


# --- the example -----------------------------------------------------------------------------------------------------


async def processor_handler(input_data: dict[str, Any]) -> dict[str, Any]:
    reader: ChannelReader = input_data["reader"]
    label = input_data["label"]

    raw = await reader.read_all()
    records = json.loads(raw.decode("utf-8"))

    total = sum(r["value"] for r in records)

    return {
        "label": label,
        "messages": [
            {"type": "stat", "key": "count", "value": len(records)},
            {"type": "stat", "key": "sum", "value": total},
            {"type": "stat", "key": "average", "value": total / len(records)},
            {"type": "stat", "key": "min", "value": min(r["value"] for r in records)},
            {"type": "stat", "key": "max", "value": max(r["value"] for r in records)},
        ],
    }


async def sender_handler(input_data: dict[str, Any]) -> Any:
    records = input_data["records"]
    channel = await iii_client.create_channel_async()

    # Start the call first (like a JavaScript promise, `trigger` starts at once; awaiting it is for the
    # result), so the processor reads while we write and the channel never has to hold the whole payload.
    result = iii_client.trigger(
        {
            "function_id": "data.processor",
            "payload": {"label": "metrics-batch", "reader": channel.reader_ref.model_dump()},
        }
    )

    payload = json.dumps(records).encode("utf-8")
    await channel.writer.write(payload)
    await channel.writer.close_async()

    return await result


# --- connecting, and running as a script ----------------------------------------------------------------------------

FUNCTIONS: dict[str, Callable[[Any], Any]] = {"data.processor": processor_handler, "data.sender": sender_handler}

SAMPLE_RECORDS = [
    {"name": "cpu_usage", "value": 72},
    {"name": "memory_mb", "value": 2048},
    {"name": "disk_iops", "value": 340},
    {"name": "network_mbps", "value": 95},
    {"name": "latency_ms", "value": 12},
]


def connect(url: str | None = None, only: Collection[str] | None = None) -> III:
    """Connect the worker and register the example's functions (all, or those in ``only``). Blocks until
    connected; call it from synchronous code (``register_worker`` waits for the connection)."""
    global iii_client
    iii_client = register_worker(url)
    for function_id, handler in FUNCTIONS.items():
        if only is None or function_id in only:
            iii_client.register_function({"id": function_id}, handler)
    return iii_client


def demo(client: III, records: list[dict[str, Any]] | None = None) -> Any:
    """Trigger ``data.sender`` with ``records`` (default: :data:`SAMPLE_RECORDS`) and return its result."""
    return client.trigger({"function_id": "data.sender", "payload": {"records": records or SAMPLE_RECORDS}})


def wait_until_listed(client: III, function_ids: Collection[str], max_attempts: int = 200) -> list[dict[str, Any]]:
    """Ask the engine (``engine::functions::list``) until it lists ``function_ids``; return their entries."""
    for _ in range(max_attempts):
        listed = client.trigger({"function_id": "engine::functions::list", "payload": {}})
        entries = [entry for entry in listed["functions"] if entry["function_id"] in function_ids]
        if len(entries) == len(function_ids):
            return entries
    raise RuntimeError(f"the engine does not list {sorted(function_ids)}")


def stop_event() -> threading.Event:
    """An event set by SIGINT (Ctrl-C) or SIGTERM: how a worker started as a script is told to stop."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit code."""
    parser = argparse.ArgumentParser(description="The seed's one-way streaming example, async handlers.")
    parser.add_argument("url", nargs="?", help="engine URL (default: $III_URL, else ws://127.0.0.1:49134)")
    parser.add_argument("--demo", action="store_true", help="trigger data.sender once, print the result and exit")
    parser.add_argument("--only", action="append", choices=sorted(FUNCTIONS), help="register only this function")
    args = parser.parse_args(argv)

    client = connect(args.url, args.only)
    try:
        if args.demo:
            print(json.dumps(demo(client), indent=2))
            return 0
        stop = stop_event()
        entries = wait_until_listed(client, args.only or list(FUNCTIONS))
        print("READY " + json.dumps({"functions": entries}), flush=True)
        stop.wait()
        return 0
    finally:
        client.shutdown()


if __name__ == "__main__":
    sys.exit(main())
