"""Channel relay roles on the OFFICIAL Python SDK (PyPI ``iii-sdk``), run by ``bench/sdk_relay.py``.

This script runs in the official SDK's own venv (``build/interop/py-official``, built by
``tests/interop/environments.py``), so it imports only the standard library and the official ``iii``
package: not ``_common`` (which needs picows and our ``iii``). It speaks the same JSON-lines protocol as
the other benchmark children: one ``{"event": …}`` object per line on stdout, commands on stdin, EOF = exit.

* ``--role writer``: ``register_worker`` (OpenTelemetry and metrics reporting off, so that only the
  channel path is measured), ``await iii.helpers.create_channel_async(iii)``, report the reader ref; on
  ``go`` write the payload with ``await writer.write(chunk)`` (64 KiB chunks, each stamped with its index in
  the first 8 bytes) and ``await writer.close_async()``.
* ``--role reader``: ``ChannelReader(url, StreamChannelRef(**ref))`` and ``async for chunk in reader``;
  counts bytes, checks the chunk order and (``--verify``) a CRC32, times first byte to last byte.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from iii import InitOptions, register_worker
from iii.channel import ChannelReader, StreamChannelRef
from iii.helpers import create_channel_async

CHUNK = 64 * 1024


def emit(event: str, **fields: Any) -> None:
    """Report one event to the driver (one JSON line on stdout)."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Commands:
    """The driver's commands (stdin lines) as an async stream; EOF reads as ``exit``."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may already be closed when stdin ends
            for line in sys.stdin:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, line.strip())
            self._loop.call_soon_threadsafe(self._queue.put_nowait, "exit")

    async def expect(self, command: str) -> None:
        """Wait for ``command``; anything else (including EOF) is an error."""
        got = await self._queue.get()
        if got != command:
            raise RuntimeError(f"expected command {command!r}, got {got!r}")


def start_watchdog(timeout_s: float) -> None:
    """End the process (exit code 3) if it is still alive after ``timeout_s``, whatever it is doing."""

    def fire() -> None:
        time.sleep(timeout_s)
        emit("error", message=f"deadline of {timeout_s:.0f} s passed")
        os._exit(3)

    threading.Thread(target=fire, daemon=True).start()


def chunk_tail() -> bytes:
    """The 64 KiB chunk's body after its 8-byte index."""
    return b"\xa5" * (CHUNK - 8)


async def writer_main(url: str, total: int, verify: bool) -> None:
    """Create the channel, report the reader ref, write on ``go``, close, report."""
    commands = Commands()
    # register_worker blocks (up to 30 s); run it off this loop.
    iii = await asyncio.to_thread(
        register_worker,
        url,
        InitOptions(
            worker_name=f"bench-official-writer-{os.getpid()}", otel={"enabled": False}, enable_metrics_reporting=False
        ),
    )
    try:
        channel = await create_channel_async(iii, 64)
        emit("channel", reader=channel.reader_ref.model_dump())
        writer = channel.writer
        await commands.expect("go")
        tail = chunk_tail()
        crc = 0
        started = time.perf_counter()
        for index in range(total // CHUNK):
            chunk = index.to_bytes(8, "little") + tail
            if verify:
                crc = zlib.crc32(chunk, crc)
            await writer.write(chunk)
        await writer.close_async()
        emit("done", seconds=time.perf_counter() - started, crc=crc if verify else None)
        await commands.expect("exit")
    finally:
        await asyncio.to_thread(iii.shutdown)


async def reader_main(url: str, ref: dict[str, str], verify: bool) -> None:
    """Read the channel to its end with ``async for``; report count, order, CRC and timing."""
    commands = Commands()
    reader = ChannelReader(url, StreamChannelRef(**ref))
    emit("ready")
    chunks = total = out_of_order = crc = 0
    t_first = t_last = 0.0
    async for chunk in reader:
        now = time.perf_counter()
        if not chunks:
            t_first = now
        if int.from_bytes(chunk[:8], "little") != chunks:
            out_of_order += 1
        if verify:
            crc = zlib.crc32(chunk, crc)
        chunks += 1
        total += len(chunk)
        t_last = now
    emit(
        "done",
        bytes=total,
        chunks=chunks,
        seconds=t_last - t_first,
        out_of_order=out_of_order,
        crc=crc if verify else None,
    )
    await commands.expect("exit")


def run(main: Callable[[], Awaitable[None]], timeout_s: float) -> None:
    """Run a role with ``asyncio.run`` under a deadline; failures become an ``error`` event and exit code 1."""
    start_watchdog(timeout_s + 15)

    async def guarded() -> None:
        await asyncio.wait_for(main(), timeout_s)

    try:
        asyncio.run(guarded())
    except BaseException as exc:  # report everything, including the deadline, to the driver
        emit("error", message=f"{type(exc).__name__}: {exc}")
        sys.stdout.flush()
        os._exit(1)


def main() -> None:
    """Command line (used by ``bench/sdk_relay.py`` only)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["writer", "reader"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--bytes", type=int, default=0)
    parser.add_argument("--ref")
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    if args.role == "writer":
        run(lambda: writer_main(args.url, args.bytes, args.verify), args.timeout)
    else:
        run(lambda: reader_main(args.url, json.loads(args.ref), args.verify), args.timeout)


if __name__ == "__main__":
    main()
