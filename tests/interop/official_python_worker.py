"""A worker on the OFFICIAL Python SDK (PyPI ``iii-sdk`` 0.25.0), run by the interop tests in its own venv.

Usage: ``III_URL=ws://... <official venv>/bin/python official_python_worker.py``. It is not imported by pytest
(it imports the official ``iii`` package, not ours). It registers the ``interop.python.*`` functions, asks the
engine (``engine::functions::list``) until they are listed, prints ``READY {...}`` with the engine's entries
for them, serves calls until its stdin closes, then shuts the client down and exits 0.

Every function takes or creates a channel and uses only the official SDK's channel API:
``iii.helpers.create_channel_async``, ``await writer.write``, ``send_message_async``, ``close_async``,
``reader.on_message`` and ``await reader.read_all()``.

Three more answer HTTP through the engine's ``http`` trigger, bound with the official ``register_trigger``:
``PUT /interop/python/upload`` hashes the request body and returns a response object;
``GET /interop/python/stream/:size`` streams through the official ``StreamResponse``;
``GET /interop/python/guarded/:id`` is behind the middleware ``interop.python.http_guard``, which lets
requests with an ``X-Pass`` header through and answers the others itself (401).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from typing import Any

from iii import InitOptions, StreamResponse, register_worker
from iii.channels import ChannelReader, ChannelWriter
from iii.helpers import create_channel_async

MAX_LIST_ATTEMPTS = 200


def pattern(length: int) -> bytes:
    """The deterministic test bytes; the Node roles (roles.mjs) and the tests compute the same."""
    return bytes((i * 31 + (i >> 10)) % 251 for i in range(length))


async def produce(writer: ChannelWriter, size: int, lang: str) -> dict[str, Any]:
    """Write ``size`` pattern bytes between two text messages, close cleanly; describe what was written."""
    data = pattern(size)
    await writer.send_message_async(f"start:{lang}")
    await writer.write(data)
    await writer.send_message_async(f"end:{lang}")
    await writer.close_async()
    return {"sha256": hashlib.sha256(data).hexdigest(), "length": len(data)}


async def digest(reader: ChannelReader) -> dict[str, Any]:
    """Read a channel to its end with ``read_all``; describe the bytes and list the text messages."""
    messages: list[str] = []
    reader.on_message(messages.append)
    raw = await reader.read_all()
    return {"sha256": hashlib.sha256(raw).hexdigest(), "length": len(raw), "messages": messages}


def main() -> int:
    iii = register_worker(os.environ["III_URL"], InitOptions(worker_name=f"interop-python-{os.getpid()}"))

    async def digest_handler(data: dict[str, Any]) -> dict[str, Any]:
        return await digest(data["reader"])

    async def produce_handler(data: dict[str, Any]) -> dict[str, Any]:
        return await produce(data["writer"], data["size"], "python")

    async def send_to_handler(data: dict[str, Any]) -> dict[str, Any]:
        channel = await create_channel_async(iii)
        read = asyncio.ensure_future(
            iii.trigger_async({"function_id": data["target"], "payload": {"reader": channel.reader_ref.model_dump()}})
        )
        written = await produce(channel.writer, data["size"], "python")
        return {"written": written, "read": await read}

    async def fetch_from_handler(data: dict[str, Any]) -> dict[str, Any]:
        channel = await create_channel_async(iii)
        written = asyncio.ensure_future(
            iii.trigger_async(
                {
                    "function_id": data["target"],
                    "payload": {"writer": channel.writer_ref.model_dump(), "size": data["size"]},
                }
            )
        )
        read = await digest(channel.reader)
        return {"written": await written, "read": read}

    async def http_upload_handler(data: dict[str, Any]) -> dict[str, Any]:
        body = await data["request_body"].read_all()
        return {
            "status_code": 201,
            "headers": {"X-Handled-By": "official-python"},
            "body": {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body)},
        }

    async def http_stream_handler(data: dict[str, Any]) -> None:
        response = StreamResponse(data["response"])
        await response.status(206)
        await response.headers({"content-type": "application/octet-stream", "x-handled-by": "official-python"})
        await response.writer.write(pattern(int(data["path_params"]["size"])))
        await response.writer.close_async()

    def http_guard_handler(data: dict[str, Any]) -> dict[str, Any]:
        if "x-pass" in data["request"]["headers"]:
            return {"action": "continue"}
        refusal = {"error": "no pass", "method": data["request"]["method"], "id": data["request"]["path_params"]["id"]}
        return {
            "action": "respond",
            "response": {"status_code": 401, "headers": {"X-Rejected-By": "official-python"}, "body": refusal},
        }

    def http_guarded_handler(data: dict[str, Any]) -> dict[str, Any]:
        return {"status_code": 200, "body": {"id": data["path_params"]["id"], "sdk": "official-python"}}

    guard = iii.register_function("interop.python.http_guard", http_guard_handler)
    routes = [
        ("interop.python.http_upload", http_upload_handler, "PUT", "/interop/python/upload", []),
        ("interop.python.http_stream", http_stream_handler, "GET", "/interop/python/stream/:size", []),
        ("interop.python.http_guarded", http_guarded_handler, "GET", "/interop/python/guarded/:id", [guard.id]),
    ]
    for function_id, handler, method, path, middleware in routes:
        iii.register_function(function_id, handler)
        config: dict[str, Any] = {"api_path": path, "http_method": method}
        if middleware:
            config["middleware_function_ids"] = middleware
        iii.register_trigger({"type": "http", "function_id": function_id, "config": config})

    refs = [
        iii.register_function("interop.python.digest", digest_handler),
        iii.register_function("interop.python.produce", produce_handler),
        iii.register_function("interop.python.send_to", send_to_handler),
        iii.register_function("interop.python.fetch_from", fetch_from_handler),
        guard,
    ]
    ids = [ref.id for ref in refs] + [function_id for function_id, *_ in routes]

    entries: list[dict[str, Any]] = []
    attempts = 0
    while len(entries) != len(ids) and attempts < MAX_LIST_ATTEMPTS:
        attempts += 1
        listed = iii.trigger({"function_id": "engine::functions::list", "payload": {}, "timeout_ms": 10_000})
        entries = [entry for entry in listed["functions"] if entry["function_id"] in ids]
    if len(entries) != len(ids):
        print(f"FATAL registration not visible: {json.dumps({'ids': ids, 'entries': entries})}", flush=True)
        iii.shutdown()
        return 1
    print("READY " + json.dumps({"functions": entries, "list_attempts": attempts}), flush=True)

    sys.stdin.read()  # the test closes our stdin to stop us
    iii.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
