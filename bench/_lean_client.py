"""A lean client of the engine's worker socket (picows + msgspec on our ``iii.protocol``, no SDK).

The load generators of the relay, invocation and memory benchmarks: they cost the engine the same as any
worker, but spend as little CPU as a Python client can, so that the engine is what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from iii.protocol.codec import decode_from_engine, decode_value, encode, encode_value
from iii.protocol.messages import (
    FromEngineMessage,
    InvocationResult,
    InvokeFunction,
    TriggerAction,
    WorkerRegistered,
    is_null,
)
from iii.protocol.refs import channel_url

__all__ = ["IdMaker", "Ref", "WorkerClient", "channel_url", "create_channel", "encode_call"]

Ref = dict[str, Any]
"""A channel ref as the engine returns it (``channel_id``, ``access_key``, ``direction``); ``channel_url(url, **ref)``
opens its end."""


class IdMaker:
    """UUID-shaped invocation ids: a random prefix per process and a counter (cheaper than ``uuid4()``)."""

    def __init__(self) -> None:
        self._prefix = str(uuid.uuid4())[:24]
        self._counter = 0

    def next(self) -> str:
        """A fresh invocation id."""
        self._counter += 1
        return f"{self._prefix}{self._counter:012x}"


def encode_call(
    invocation_id: str,
    function_id: str,
    data: Any,
    action: TriggerAction | None = None,
    traceparent: str | None = None,
) -> bytes:
    """An ``invokefunction`` message as a worker sends it; ``data`` is any JSON-encodable value; ``action`` e.g.
    ``TriggerAction(type="enqueue", queue="default")``; ``traceparent`` the call's trace context, if any."""
    raw = msgspec.Raw(encode_value(data))
    message = InvokeFunction(
        function_id=function_id, invocation_id=invocation_id, data=raw, action=action, traceparent=traceparent
    )
    return encode(message)


class WorkerClient(WSListener):
    """A lean client of the worker socket: waits for ``workerregistered`` and awaits call results.

    Use :meth:`connect`, then :meth:`call`. For tight loops, set ``on_message``: it then receives every
    decoded message after registration, synchronously, and must not keep the message's ``Raw`` fields.
    """

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: WSTransport | None = None
        self.registered: asyncio.Future[str] = loop.create_future()
        self.disconnected: asyncio.Future[None] = loop.create_future()
        self.pending: dict[str, asyncio.Future[InvocationResult]] = {}
        self.ids = IdMaker()
        self.on_message: Callable[[FromEngineMessage], None] | None = None

    @classmethod
    async def connect(cls, engine_url: str, timeout_s: float = 10.0) -> WorkerClient:
        """Connect to ``/`` and wait for ``workerregistered``."""
        _, client = await ws_connect(cls, engine_url + "/", websocket_handshake_timeout=timeout_s)
        assert isinstance(client, WorkerClient)
        await asyncio.wait_for(client.registered, timeout_s)
        return client

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.disconnected.done():
            self.disconnected.set_result(None)
        error = ConnectionError("worker socket disconnected")
        for future in self.pending.values():
            if not future.done():
                future.set_exception(error)
        self.pending.clear()
        if not self.registered.done():
            self.registered.set_exception(error)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.TEXT:
            on_message = self.on_message
            # msgspec.Raw fields point into the decoded buffer, and picows reuses its buffer once this callback
            # returns: decode the frame in place only when the message is used up inside the callback.
            payload = frame.get_payload_as_memoryview() if on_message is not None else frame.get_payload_as_bytes()
            message = decode_from_engine(payload)
            if message is None:
                return
            if isinstance(message, WorkerRegistered):
                if not self.registered.done():
                    self.registered.set_result(message.worker_id)
                return
            if on_message is not None:
                on_message(message)
                return
            if isinstance(message, InvocationResult):
                future = self.pending.pop(message.invocation_id, None)
                if future is not None and not future.done():
                    future.set_result(message)
        elif msg_type is WSMsgType.CLOSE:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def send(self, payload: bytes) -> None:
        """Send one text message."""
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, payload)

    def call_nowait(
        self, function_id: str, data: Any, action: TriggerAction | None = None
    ) -> asyncio.Future[InvocationResult]:
        """Send a call (with ``action``, if given); the future resolves with the ``invocationresult`` message."""
        invocation_id = self.ids.next()
        future: asyncio.Future[InvocationResult] = asyncio.get_running_loop().create_future()
        self.pending[invocation_id] = future
        self.send(encode_call(invocation_id, function_id, data, action))
        return future

    async def call(self, function_id: str, data: Any) -> Any:
        """Call ``function_id`` and return its decoded result; raise ``RuntimeError`` with an error result."""
        message = await self.call_nowait(function_id, data)
        if not is_null(message.error):
            raise RuntimeError(f"{function_id} failed: {bytes(message.error).decode()}")
        return decode_value(message.result)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Close with 1000 and wait (bounded) for the disconnect."""
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.disconnected), timeout_s)


async def create_channel(client: WorkerClient, buffer_size: int = 64) -> dict[str, Ref]:
    """``engine::channels::create``: returns ``{"writer": ref, "reader": ref}``."""
    result: dict[str, Ref] = await client.call("engine::channels::create", {"buffer_size": buffer_size})
    return result
