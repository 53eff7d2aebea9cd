"""Channel relay roles on the OFFICIAL Python SDK (PyPI ``iii-sdk``), run by ``bench/sdk_relay.py``.

This script runs in the official SDK's own venv (``build/interop/py-official``, built by
``tests/interop/environments.py``), so it imports only the standard library, ``_common`` (standard library
only) and the official ``iii`` package. It speaks the same JSON-lines protocol as the other benchmark
children, and measures with the same loops as our SDK's roles (``write_stamped``, ``read_stamped``).

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
import json
import os
from typing import Any

from _common import Commands, emit, read_stamped, run_role, write_stamped

from iii import InitOptions, register_worker
from iii.channel import ChannelReader, StreamChannelRef
from iii.helpers import create_channel_async


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
        await commands.expect("go")
        emit("done", **await write_stamped(channel.writer, total, verify))
        await commands.expect("exit")
    finally:
        await asyncio.to_thread(iii.shutdown)


async def reader_main(url: str, ref: dict[str, Any], verify: bool) -> None:
    """Read the channel to its end with ``async for``; report count, order, CRC and timing."""
    commands = Commands()
    reader = ChannelReader(url, StreamChannelRef(**ref))
    emit("ready")
    emit("done", **await read_stamped(reader, verify))
    await commands.expect("exit")


def main() -> None:
    """Command line (used by ``bench/sdk_relay.py`` only)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["writer", "reader"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--bytes", type=int, default=0)
    parser.add_argument("--ref", type=json.loads)
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    if args.role == "writer":
        run_role(lambda: writer_main(args.url, args.bytes, args.verify), args.timeout, use_uvloop=False)
    else:
        run_role(lambda: reader_main(args.url, args.ref, args.verify), args.timeout, use_uvloop=False)


if __name__ == "__main__":
    main()
