"""A lean worker-socket client (picows + msgspec, no SDK) for load tests that need many calls per second."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect


class Incoming(msgspec.Struct):
    type: str
    invocation_id: str | None = None
    function_id: str | None = None
    worker_id: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"null")
    result: msgspec.Raw = msgspec.Raw(b"null")
    error: msgspec.Raw = msgspec.Raw(b"null")


_DECODER = msgspec.json.Decoder(Incoming)


class LeanWorker(WSListener):
    """Calls ``on_message(message)`` for every message after ``workerregistered`` (inside the frame callback:
    ``Raw`` fields are only valid during the call)."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport: WSTransport | None = None
        self.registered: asyncio.Future[str] = loop.create_future()
        self.on_message: Callable[[Incoming], None] = lambda message: None

    @classmethod
    async def connect(cls, url: str) -> LeanWorker:
        _, worker = await ws_connect(cls, url + "/")
        assert isinstance(worker, LeanWorker)
        await asyncio.wait_for(worker.registered, 10)
        return worker

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.registered.done():
            self.registered.set_exception(ConnectionError("disconnected before workerregistered"))

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            message = _DECODER.decode(frame.get_payload_as_memoryview())
            if message.type == "workerregistered":
                self.registered.set_result(message.worker_id or "")
            else:
                self.on_message(message)
        elif frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, payload)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.send_close(WSCloseCode.OK)
            self.transport.disconnect()


def serve_echo(host: LeanWorker) -> None:
    """Answer every call with its own data."""

    def answer(message: Incoming) -> None:
        if message.type == "invokefunction" and message.invocation_id is not None:
            host.send(
                b'{"type":"invocationresult","invocation_id":"%s","result":%s}'
                % (message.invocation_id.encode(), bytes(message.data))
            )

    host.on_message = answer


async def call_many(caller: LeanWorker, function_id: str, count: int, in_flight: int) -> int:
    """Make ``count`` calls with ``in_flight`` outstanding; returns how many came back without an error."""
    done = asyncio.get_running_loop().create_future()
    ids = itertools.count()
    sent = ok = answered = 0

    def send_one() -> None:
        nonlocal sent
        sent += 1
        call_id = next(ids)
        caller.send(
            b'{"type":"invokefunction","invocation_id":"c-%d","function_id":"%s","data":{"n":%d}}'
            % (call_id, function_id.encode(), call_id)
        )

    def on_result(message: Incoming) -> None:
        nonlocal ok, answered
        if message.type != "invocationresult":
            return
        answered += 1
        if bytes(message.error) == b"null" and bytes(message.result).startswith(b'{"n":'):
            ok += 1
        if sent < count:
            send_one()
        elif answered == count and not done.done():
            done.set_result(None)

    caller.on_message = on_result
    for _ in range(min(in_flight, count)):
        send_one()
    await done
    return ok
