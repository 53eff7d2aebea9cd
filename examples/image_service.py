"""An image service: the worker that the README's ``iii`` command examples talk to.

Its functions take their bytes through data channels, so a file of any size streams through them:

* ``images.info`` (``{"reader": ref}``): the format (PNG, JPEG or GIF), width and height of an image, read
  from its header, and its size in bytes. ``iii send photo.png --to images.info``.
* ``files.sha256`` (``{"reader": ref}``): the SHA-256 and size of any stream. ``iii send big.bin --to
  files.sha256``.
* ``text.upper`` (``{"input": ref, "output": ref}``): streams its input back upper-cased (ASCII letters).
  ``printf 'hello\\n' | iii pipe text.upper``.
* ``images.fit`` (``{"width", "height", "box"}``, no channel): the size an image of ``width`` x ``height``
  gets when scaled down to fit in a ``box`` x ``box`` square (default 400), keeping its aspect ratio.
  ``iii call images.fit --data '{"width": 800, "height": 600}'``.

Run it against a running engine (``iii engine``)::

    python examples/image_service.py [ENGINE_URL]

``ENGINE_URL`` defaults to ``$III_URL``, else ``ws://127.0.0.1:49134``. The worker (named
``image-service``) prints one line ``READY {"functions": [...]}`` once the engine lists its functions, and
serves until Ctrl-C / SIGTERM. Nothing beyond the standard library and ``iii``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from iii import III, ChannelReader, ChannelWriter, InitOptions, register_worker

HEADER_LIMIT = 1024 * 1024
"""How much of an image's start ``images.info`` keeps to find its size (a JPEG's EXIF may come first)."""
UPPER = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
JPEG_SIZE_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""The start-of-frame markers (SOF0-SOF15 but DHT, JPG and DAC), which carry a JPEG's height and width."""


def image_size(header: bytes) -> tuple[str, int, int] | None:
    """``(format, width, height)`` from the start of a PNG, JPEG or GIF file; None if it is none of them."""
    if header.startswith(b"\x89PNG\r\n\x1a\n") and header[12:16] == b"IHDR":
        return "png", int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    if header[:6] in (b"GIF87a", b"GIF89a") and len(header) >= 10:
        return "gif", int.from_bytes(header[6:8], "little"), int.from_bytes(header[8:10], "little")
    if header.startswith(b"\xff\xd8"):
        position = 2
        while position + 9 <= len(header):
            if header[position] != 0xFF:
                return None
            marker = header[position + 1]
            if marker == 0xFF:  # fill byte
                position += 1
                continue
            if marker in JPEG_SIZE_MARKERS:
                height = int.from_bytes(header[position + 5 : position + 7], "big")
                width = int.from_bytes(header[position + 7 : position + 9], "big")
                return "jpeg", width, height
            position += 2 + int.from_bytes(header[position + 2 : position + 4], "big")
    return None


async def info(data: dict[str, Any]) -> dict[str, Any]:
    """``images.info``: format and size of the image streamed through ``data["reader"]``."""
    reader: ChannelReader = data["reader"]
    header = bytearray()
    size = 0
    async for chunk in reader:  # read to the end: the size counts every byte
        size += len(chunk)
        if len(header) < HEADER_LIMIT:
            header += chunk[: HEADER_LIMIT - len(header)]
    found = image_size(bytes(header))
    if found is None:
        raise ValueError("not a PNG, JPEG or GIF image")
    kind, width, height = found
    return {"format": kind, "width": width, "height": height, "bytes": size}


async def sha256(data: dict[str, Any]) -> dict[str, Any]:
    """``files.sha256``: the hash and size of the stream in ``data["reader"]``."""
    reader: ChannelReader = data["reader"]
    digest = hashlib.sha256()
    size = 0
    async for chunk in reader:
        digest.update(chunk)
        size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


async def upper(data: dict[str, Any]) -> dict[str, int]:
    """``text.upper``: copy ``data["input"]`` to ``data["output"]`` with ASCII letters upper-cased."""
    source: ChannelReader = data["input"]
    sink: ChannelWriter = data["output"]
    size = 0
    async for chunk in source:
        await sink.write(chunk.translate(UPPER))
        size += len(chunk)
    await sink.close_async()
    return {"bytes": size}


def fit(data: dict[str, Any]) -> dict[str, int]:
    """``images.fit``: ``width`` x ``height`` scaled down (never up) to fit a ``box`` square, aspect kept."""
    width, height, box = data["width"], data["height"], data.get("box", 400)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height, box)):
        raise ValueError("width, height and box must be positive integers")
    scale = min(1.0, box / max(width, height))
    return {"width": max(1, round(width * scale)), "height": max(1, round(height * scale))}


FUNCTIONS = {
    "images.info": (info, "format and size of an image (stream)"),
    "images.fit": (fit, "fit a size into a box"),
    "files.sha256": (sha256, "hash a stream"),
    "text.upper": (upper, "upper-case a stream"),
}


def serve(client: III) -> list[dict[str, Any]]:
    """Register the functions and return the engine's entries for them once it lists them all."""
    for function_id, (handler, description) in FUNCTIONS.items():
        client.register_function({"id": function_id, "description": description}, handler)
    # The engine handles one worker's messages in order: this answer comes after the registrations above.
    listed = client.trigger({"function_id": "engine::functions::list", "payload": {}})
    return [entry for entry in listed["functions"] if entry["function_id"] in FUNCTIONS]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit code."""
    parser = argparse.ArgumentParser(description="An image service whose functions take bytes through channels.")
    parser.add_argument("url", nargs="?", help="engine URL (default: $III_URL, else ws://127.0.0.1:49134)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with register_worker(args.url, InitOptions(worker_name="image-service")) as client:
        print("READY " + json.dumps({"functions": serve(client)}), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
