"""One-way data streaming with synchronous handlers: the seed's Python example, as written.

``data.sender`` creates a channel, writes the records into it as one JSON document, closes the writer and
then triggers ``data.processor`` with the channel's reader ref. The processor reads the stream to its end
(``reader.read_all()`` blocks in a plain ``def`` handler) and returns statistics of the values.

Run it::

    python examples/one_way_sync.py [ENGINE_URL]          # serve both functions until Ctrl-C or SIGTERM
    python examples/one_way_sync.py [ENGINE_URL] --demo   # trigger data.sender once, print the result, exit
    python examples/one_way_sync.py --only data.processor # serve just one function (another process has the other)

``ENGINE_URL`` defaults to ``$III_URL``, else ``ws://127.0.0.1:49134``. As a worker it prints one line
``READY {"functions": [...]}`` once the engine lists its functions.

Size limit of this synchronous form: the sender writes the whole payload *before* the processor exists, and
``write`` is backpressured, so the payload must fit in what the channel can hold before its reader connects
(the engine's channel buffer, 64 frames of up to 64 KiB by default, plus socket buffers). A larger payload
makes ``write`` wait for a reader that is only triggered afterwards. ``one_way_async.py`` triggers first and
writes while the processor reads, so its size is unbounded.
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
"""The worker connection the handlers use (set by :func:`connect`, as the seed's module-level client)."""


# --- the seed's example (bodies as written there; only type hints added) --------------------------------------------


def processor_handler(input_data: dict[str, Any]) -> dict[str, Any]:
    reader: ChannelReader = input_data["reader"]
    label = input_data["label"]

    raw = reader.read_all()
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


def sender_handler(input_data: dict[str, Any]) -> Any:
    records = input_data["records"]
    channel = iii_client.create_channel()

    payload = json.dumps(records).encode("utf-8")
    channel.writer.write(payload)
    channel.writer.close()

    result = iii_client.trigger(
        {
            "function_id": "data.processor",
            "payload": {"label": "metrics-batch", "reader": channel.reader_ref.model_dump()},
        }
    )

    return result


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
    """Connect the worker and register the example's functions (all, or those in ``only``): the seed's
    top-level ``register_worker`` and ``register_function`` lines. Blocks until connected."""
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
    parser = argparse.ArgumentParser(description="The seed's one-way streaming example, synchronous handlers.")
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
