"""Bidirectional streaming with progress: the seed's Python example (async worker, sync coordinator).

``stream.coordinator`` creates two channels, writes the text in chunks into the first one, and triggers
``stream.worker`` with the first channel's reader and the second channel's writer. The worker reads the
chunks, sends a ``progress`` text message per chunk and a ``complete`` message on the second channel, then
writes a JSON result to it as binary data. The coordinator collects the messages with ``on_message`` and reads
the binary result with ``read_all()``.

One change from the seed (see the comment in ``coordinator_handler``): the coordinator writes and closes the
input channel *before* it triggers the worker, because a synchronous ``trigger`` blocks until the worker has
returned, and the worker returns only after reading its input to the end. The coordinator also returns the
worker's result (``workerResult``), as the seed's Node and Rust versions do.

Run it::

    python examples/bidirectional_sync.py [ENGINE_URL]          # serve both functions until Ctrl-C or SIGTERM
    python examples/bidirectional_sync.py [ENGINE_URL] --demo   # trigger stream.coordinator once, print, exit
    python examples/bidirectional_sync.py --only stream.worker  # serve just one function

``ENGINE_URL`` defaults to ``$III_URL``, else ``ws://127.0.0.1:49134``. As a worker it prints one line
``READY {"functions": [...]}`` once the engine lists its functions.

Size limit of this synchronous form: everything the coordinator writes must fit in what the input channel
holds before its reader connects, and everything the worker sends (one progress message per chunk, the
result) must fit in what the output channel holds before the coordinator reads it (the engine buffers 64
frames per channel by default, plus socket buffers). ``bidirectional_async.py`` writes, and reads the
output, while the worker runs, so its size is unbounded.
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
from iii.channels import ChannelReader, ChannelWriter

iii_client: III
"""The worker connection the handlers use (set by :func:`connect`, as the seed's module-level client)."""


# --- the seed's example (bodies as written there, but for the coordinator's order; type hints added) ----------


async def worker_handler(input_data: dict[str, Any]) -> dict[str, Any]:
    reader: ChannelReader = input_data["reader"]
    writer: ChannelWriter = input_data["writer"]

    chunks = []
    chunk_count = 0
    async for chunk in reader:
        chunks.append(chunk)
        chunk_count += 1
        writer.send_message(
            json.dumps(
                {
                    "type": "progress",
                    "chunks_received": chunk_count,
                }
            )
        )

    full_data = b"".join(chunks).decode("utf-8")
    words = full_data.split()

    writer.send_message(
        json.dumps(
            {
                "type": "complete",
                "word_count": len(words),
                "byte_count": len(b"".join(chunks)),
            }
        )
    )

    result_json = json.dumps({"words": words[:5], "total": len(words)}).encode("utf-8")
    await writer.write(result_json)
    writer.close()

    return {"status": "done"}


def coordinator_handler(input_data: dict[str, Any]) -> dict[str, Any]:
    text = input_data["text"]
    chunk_size = input_data["chunkSize"]

    input_channel = iii_client.create_channel()
    output_channel = iii_client.create_channel()

    messages = []
    output_channel.reader.on_message(lambda msg: messages.append(json.loads(msg)))

    # Changed from the seed: write and close the worker's input BEFORE triggering it. In a plain `def`
    # handler `trigger` blocks until stream.worker returns, and the worker returns only once it has read
    # its input to the end, so input written after the trigger would never be sent (a deadlock). The
    # engine holds what we write until the worker connects its reader.
    text_bytes = text.encode("utf-8")
    offset = 0
    while offset < len(text_bytes):
        end = min(offset + chunk_size, len(text_bytes))
        input_channel.writer.write(text_bytes[offset:end])
        offset = end
    input_channel.writer.close()

    worker_result = iii_client.trigger(
        {
            "function_id": "stream.worker",
            "payload": {
                "reader": input_channel.reader_ref.model_dump(),
                "writer": output_channel.writer_ref.model_dump(),
            },
        }
    )

    result_data = output_channel.reader.read_all()
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
    """Connect the worker and register the example's functions (all, or those in ``only``): the seed's
    top-level ``register_worker`` and ``register_function`` lines. Blocks until connected."""
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
    parser = argparse.ArgumentParser(description="The seed's bidirectional streaming example, sync coordinator.")
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
