"""A bare protocol client for engine tests: raw JSON messages over a `websockets` connection.

It speaks the wire protocol directly, the way an SDK would, so the tests check the engine's behaviour
on the wire and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection

from iii.engine import Engine

TIMEOUT_S = 10.0


async def connect_raw(url: str, **options: Any) -> ClientConnection:
    """A WebSocket to ``url`` with no size limit and no compression (the engine offers none)."""
    return await websockets.connect(url, max_size=None, compression=None, open_timeout=TIMEOUT_S, **options)


class RawWorker:
    """One worker connection; messages that no one waits for are kept in an inbox, in order."""

    def __init__(self, ws: ClientConnection, registered: dict[str, Any]) -> None:
        self.ws = ws
        self.worker_id: str = registered["worker_id"]
        self.reattach_token: str = registered["reattach_token"]
        self.first_message = registered

    @classmethod
    async def connect(cls, url: str, **options: Any) -> RawWorker:
        ws = await connect_raw(url, **options)
        first = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
        assert first["type"] == "workerregistered", first
        return cls(ws, first)

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            message = json.dumps(message)
        await self.ws.send(message)

    async def recv(self, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
        """The next message from the engine (fails the test after ``timeout_s``)."""
        value: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout_s))
        return value

    async def recv_type(self, message_type: str, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
        """The next message of ``message_type``; others in between are skipped."""
        async with asyncio.timeout(timeout_s):
            while True:
                message = await self.recv(timeout_s)
                if message["type"] == message_type:
                    return message

    async def register(self, function_id: str) -> None:
        await self.send({"type": "registerfunction", "id": function_id})
        # Registration is not acknowledged on the wire; a ping round trip proves it was processed.
        await self.ping()

    async def ping(self) -> None:
        await self.send({"type": "ping"})
        await self.recv_type("pong")

    async def invoke(self, function_id: str, data: Any = None, **extra: Any) -> str:
        invocation_id = str(uuid.uuid4())
        message = {"type": "invokefunction", "invocation_id": invocation_id, "function_id": function_id, **extra}
        if data is not None:
            message["data"] = data
        await self.send(message)
        return invocation_id

    async def call(self, function_id: str, data: Any = None, **extra: Any) -> dict[str, Any]:
        """Invoke and wait for the matching ``invocationresult``."""
        invocation_id = await self.invoke(function_id, data, **extra)
        while True:
            message = await self.recv_type("invocationresult")
            if message["invocation_id"] == invocation_id:
                return message

    async def result_of(self, function_id: str, data: Any = None) -> Any:
        """Call and return the ``result``; fails the test on an error."""
        message = await self.call(function_id, data)
        assert not message.get("error"), message
        return message.get("result")

    async def serve_one(self, handler: Callable[[dict[str, Any]], Awaitable[Any] | Any]) -> dict[str, Any]:
        """Answer the next delivered invocation with ``handler(delivery)``; returns the delivery."""
        delivery = await self.recv_type("invokefunction")
        result = handler(delivery)
        if asyncio.iscoroutine(result):
            result = await result
        await self.send(
            {
                "type": "invocationresult",
                "invocation_id": delivery["invocation_id"],
                "function_id": delivery["function_id"],
                "result": result,
            }
        )
        return delivery

    async def close(self) -> None:
        await self.ws.close()


async def eventually(condition: Callable[[], bool], timeout_s: float = TIMEOUT_S, what: str = "condition") -> None:
    """Wait until ``condition()`` holds, failing the test after ``timeout_s``.

    For engine-internal state that has no event to wait on (a disconnect being processed in the same
    process, a writer paused by backpressure). The check is cheap, so it is simply re-evaluated often.
    """
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - there is no event to await for engine-internal state
            await asyncio.sleep(0.005)
    assert condition(), what


async def scrape(
    engine: Engine, headers: dict[str, str] | None = None, query: str = ""
) -> tuple[int, dict[tuple[str, str], float]]:
    """The status and every sample as {(name, labels as text): value}."""
    url = f"http://127.0.0.1:{engine.port}/metrics{query}"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        if r.status != 200:
            return r.status, {}
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await r.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value
    return 200, samples
