"""Bidirectional streaming with progress, all ``async def``: the seed's bidirectional example on the async API.

``stream.coordinator`` creates two channels and triggers ``stream.worker`` with the first channel's reader
and the second channel's writer. Then, at the same time, it writes the text in chunks into the first channel
and reads the second: ``progress`` and ``complete`` text messages arrive through ``on_message``, the worker's
JSON result as binary data. The worker reads the chunks, sends a progress message per chunk, a ``complete``
message, then writes the result and closes. As in the seed's Node version, writing and reading overlap, so
the text may be far larger than the channels' buffers: every ``await writer.write(...)`` waits whenever the
other side is behind (backpressure).

Run it::

    python examples/bidirectional_async.py [ENGINE_URL]          # serve both functions until Ctrl-C or SIGTERM
    python examples/bidirectional_async.py [ENGINE_URL] --demo   # trigger stream.coordinator once, print, exit
    python examples/bidirectional_async.py --only stream.worker  # serve just one function

``ENGINE_URL`` defaults to ``$III_URL``, else ``ws://127.0.0.1:49134``. As a worker it prints one line
``READY {"functions": [...]}`` once the engine lists its functions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Any

from iii import III, register_worker
from iii.channels import ChannelReader, ChannelWriter

iii_client: III
"""The worker connection the handlers use (set by :func:`connect`)."""


# --- the example -----------------------------------------------------------------------------------------------------


async def worker_handler(input_data: dict[str, Any]) -> dict[str, Any]:
    reader: ChannelReader = input_data["reader"]
    writer: ChannelWriter = input_data["writer"]

    chunks = []
    chunk_count = 0
    async for chunk in reader:
        chunks.append(chunk)
        chunk_count += 1
        await writer.send_message_async(json.dumps({"type": "progress", "chunks_received": chunk_count}))

    full_data = b"".join(chunks).decode("utf-8")
    words = full_data.split()

    await writer.send_message_async(
        json.dumps({"type": "complete", "word_count": len(words), "byte_count": len(b"".join(chunks))})
    )

    result_json = json.dumps({"words": words[:5], "total": len(words)}).encode("utf-8")
    await writer.write(result_json)
    await writer.close_async()

    return {"status": "done"}


async def coordinator_handler(input_data: dict[str, Any]) -> dict[str, Any]:
    text = input_data["text"]
    chunk_size = input_data["chunkSize"]

    input_channel = await iii_client.create_channel_async()
    output_channel = await iii_client.create_channel_async()

    messages = []
    output_channel.reader.on_message(lambda msg: messages.append(json.loads(msg)))

    async def write_input() -> None:
        text_bytes = text.encode("utf-8")
        offset = 0
        while offset < len(text_bytes):
            end = min(offset + chunk_size, len(text_bytes))
            await input_channel.writer.write(text_bytes[offset:end])
            offset = end
        await input_channel.writer.close_async()

    trigger_task = asyncio.ensure_future(
        iii_client.trigger_async(
            {
                "function_id": "stream.worker",
                "payload": {
                    "reader": input_channel.reader_ref.model_dump(),
                    "writer": output_channel.writer_ref.model_dump(),
                },
            }
        )
    )
    write_task = asyncio.ensure_future(write_input())

    result_data = await output_channel.reader.read_all()

    await write_task
    worker_result = await trigger_task
    binary_result = json.loads(result_data.decode("utf-8"))

    return {"messages": messages, "binaryResult": binary_result, "workerResult": worker_result}


# --- connecting, and running as a script ----------------------------------------------------------------------------

FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "stream.worker": worker_handler,
    "stream.coordinator": coordinator_handler,
}

SAMPLE_TEXT = "The quick brown fox jumps over the lazy dog and then runs around the park"
SAMPLE_CHUNK_SIZE = 10


def connect(url: str | None = None, only: Collection[str] | None = None) -> III:
    """Connect the worker and register the example's functions (all, or those in ``only``). Blocks until
    connected; call it from synchronous code (``register_worker`` waits for the connection)."""
    global iii_client
    iii_client = register_worker(url)
    for function_id, handler in FUNCTIONS.items():
        if only is None or function_id in only:
            iii_client.register_function({"id": function_id}, handler)
    return iii_client


def demo(client: III, text: str = SAMPLE_TEXT, chunk_size: int = SAMPLE_CHUNK_SIZE) -> Any:
    """Trigger ``stream.coordinator`` with ``text`` in chunks of ``chunk_size`` bytes and return its result."""
    return client.trigger({"function_id": "stream.coordinator", "payload": {"text": text, "chunkSize": chunk_size}})


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
    parser = argparse.ArgumentParser(description="The seed's bidirectional streaming example, async handlers.")
    parser.add_argument("url", nargs="?", help="engine URL (default: $III_URL, else ws://127.0.0.1:49134)")
    parser.add_argument(
        "--demo", action="store_true", help="trigger stream.coordinator once, print the result and exit"
    )
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
