"""Calls a worker makes: ``trigger`` in its three shapes, and the answers it waits for.

One function builds an invocation (:func:`build_invocation`); where it is sent from depends on the caller:

* plain synchronous code builds it in its own thread, hands only the send to the SDK loop and waits on a
  concurrent future (one hand-over each way);
* another thread's event loop (``asyncio.run``) does the same and awaits that future on its own loop;
* code on the SDK loop (an ``async def`` handler) sends directly.

Anything unusual (not connected yet, a full socket, ``void``) takes the general path, a coroutine on the SDK
loop that waits for the connection and for room. Results arrive on the SDK loop (:meth:`Calls.on_result`);
a lost connection fails every waiting call at once (:meth:`Calls.fail_all`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from iii.errors import InvocationError, UsageError
from iii.protocol import errors
from iii.protocol.codec import decode_value
from iii.protocol.messages import JSON_NULL, InvocationResult, InvokeFunction, TriggerAction
from iii.sdk.connection import Connection
from iii.sdk.context import current_invocation
from iii.sdk.options import InitOptions
from iii.sdk.payloads import encode_payload, invocation_error
from iii.sdk.portal import Portal, dual, inbox, running_loop

Pending = asyncio.Future[Any] | concurrent.futures.Future[Any]


def build_invocation(request: Mapping[str, Any], default_timeout_ms: int) -> tuple[InvokeFunction, int]:
    """The ``invokefunction`` for a trigger request, and its timeout in ms. Raises :class:`UsageError` for a
    request without a function id and ``TypeError`` for a payload that cannot be sent."""
    function_id = request.get("function_id")
    if not isinstance(function_id, str) or not function_id:
        raise UsageError("trigger needs a 'function_id' string")
    timeout_ms = int(request.get("timeout_ms") or default_timeout_ms)
    metadata = request.get("metadata")
    void = _is_void(request.get("action"))
    message = InvokeFunction(
        function_id=function_id,
        invocation_id=None if void else str(uuid.uuid4()),
        data=encode_payload(request.get("payload")),
        metadata=encode_payload(metadata) if metadata is not None else JSON_NULL,
        action=TriggerAction("void") if void else _enqueue_action(request.get("action")),
        timeout_ms=None if void else timeout_ms,
    )
    current = current_invocation()
    if current is not None:  # a call from a handler says so: observers see it, and their loops stay bounded
        message.caller = current.as_caller
        message.observe_depth = current.observe_depth or None
        message.traceparent = current.outgoing_traceparent  # and it continues the handler's trace
        message.baggage = current.baggage
    return message, timeout_ms


class Calls:
    """The calls of one worker that wait for an answer, by invocation id."""

    def __init__(self, portal: Portal, connection: Connection, options: InitOptions) -> None:
        self._portal = portal
        self._conn = connection
        self._options = options
        self._pending: dict[str, Pending] = {}

    # --- the three shapes ------------------------------------------------------------------------------

    def trigger(self, request: Mapping[str, Any]) -> Any:
        """Dual-mode: the result in plain sync code, an awaitable where a loop runs (see :mod:`iii.sdk.portal`)."""
        self._portal.ensure_open()
        running = running_loop()
        if running is self._portal.loop:
            return running.create_task(self._trigger(request))
        if self._fast_path_open(request):
            message, timeout_ms = build_invocation(request, self._options.invocation_timeout_ms)
            if running is None:
                return self._wait(self._send_from_thread(message), message, timeout_ms)
            return self._await_on(running, message, timeout_ms)
        return dual(self._portal, self._trigger(request), blocking=True)

    async def trigger_async(self, request: Mapping[str, Any]) -> Any:
        """Like :meth:`trigger`, always awaitable."""
        self._portal.ensure_open()
        if asyncio.get_running_loop() is self._portal.loop:
            return await self._trigger(request)
        return await self.trigger(request)

    def _fast_path_open(self, request: Mapping[str, Any]) -> bool:
        socket = self._conn.socket
        return (
            socket is not None
            and self._conn.is_open
            and socket.writable.is_set()
            and not _is_void(request.get("action"))
        )

    def _send_from_thread(self, message: InvokeFunction) -> concurrent.futures.Future[Any]:
        """Register a call built off the loop and have the SDK loop send it."""
        assert message.invocation_id is not None
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._pending[message.invocation_id] = future
        if not self._portal.call_soon(self._send_call, message):
            self._pending.pop(message.invocation_id, None)
            future.set_exception(InvocationError(errors.INVOCATION_STOPPED, "the worker is shutting down"))
        return future

    def _wait(self, future: concurrent.futures.Future[Any], message: InvokeFunction, timeout_ms: int) -> Any:
        try:
            return future.result(timeout_ms / 1000)
        except concurrent.futures.TimeoutError:
            raise _timed_out(message, timeout_ms) from None
        finally:
            self._forget(message, future)

    async def _await_on(self, loop: asyncio.AbstractEventLoop, message: InvokeFunction, timeout_ms: int) -> Any:
        """From another thread's loop: the answer is a future of that loop, settled through its inbox."""
        assert message.invocation_id is not None
        future: asyncio.Future[Any] = loop.create_future()
        self._pending[message.invocation_id] = future
        timer = loop.call_later(timeout_ms / 1000, _time_out, future, message, timeout_ms)
        if not self._portal.call_soon(self._send_call, message):
            self._pending.pop(message.invocation_id, None)
            future.set_exception(InvocationError(errors.INVOCATION_STOPPED, "the worker is shutting down"))
        try:
            return await future
        finally:
            timer.cancel()
            self._pending.pop(message.invocation_id, None)  # gone unless it timed out; one dict operation

    def _forget(self, message: InvokeFunction, future: concurrent.futures.Future[Any]) -> None:
        """Drop a call that ended without its answer (timed out, interrupted); an answered one is gone."""
        if not future.done():
            assert message.invocation_id is not None
            self._pending.pop(message.invocation_id, None)  # one dict operation: safe from any thread

    def _send_call(self, message: InvokeFunction) -> None:
        """Send a call built off the loop; if it cannot go (no connection, too big), fail it at once."""
        try:
            sent = self._conn.send(message)
        except InvocationError as exc:
            failure = exc
        else:
            if sent:
                return
            failure = InvocationError(errors.INVOCATION_STOPPED, "not connected to the engine", message.function_id)
        assert message.invocation_id is not None
        future = self._pending.pop(message.invocation_id, None)
        if future is not None and not future.done():
            future.set_exception(failure)

    async def _trigger(self, request: Mapping[str, Any]) -> Any:
        """The general path, on the SDK loop: waits for the connection and for room on the socket."""
        message, timeout_ms = build_invocation(request, self._options.invocation_timeout_ms)
        timeout_s = timeout_ms / 1000
        await self._conn.await_open(timeout_s)
        if message.invocation_id is None:  # void: sent, nothing to wait for
            self._conn.send(message)
            return None
        socket = self._conn.socket
        if socket is not None and not socket.writable.is_set():
            await socket.writable.wait()  # the engine is slow to read: wait instead of piling up messages
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending[message.invocation_id] = future
        timer = loop.call_later(timeout_s, _time_out, future, message, timeout_ms)
        try:
            self._conn.send(message)
            return await future
        finally:
            timer.cancel()
            self._pending.pop(message.invocation_id, None)

    # --- answers ---------------------------------------------------------------------------------------

    def on_result(self, message: InvocationResult) -> None:
        future = self._pending.pop(message.invocation_id, None)
        if future is None or future.done():
            return
        if isinstance(future, asyncio.Future) and future.get_loop() is not self._portal.loop:
            inbox(future.get_loop()).post(_settle, future, message)  # another thread's loop: settle it there
            return
        _settle(future, message)

    def fail_all(self, code: str, message: str) -> None:
        """Fail every call still waiting (the connection was lost, or the worker shuts down)."""
        pending, self._pending = self._pending, {}
        for invocation_id, future in pending.items():
            error = InvocationError(code, message, invocation_id=invocation_id)
            if isinstance(future, asyncio.Future) and future.get_loop() is not self._portal.loop:
                inbox(future.get_loop()).post(_fail, future, error)
            else:
                _fail(future, error)


def _fail(future: Pending, error: InvocationError) -> None:
    if not future.done():
        future.set_exception(error)


def _settle(future: Pending, message: InvocationResult) -> None:
    """Set ``future`` from an ``invocationresult`` (on the future's own loop, or any thread for a concurrent
    future)."""
    if future.done():
        return
    try:
        error = decode_value(message.error)
        result = None if error else decode_value(message.result)
    except (msgspec.DecodeError, RecursionError) as exc:  # valid JSON no Python value holds (1e999)
        problem = f"the result of {message.function_id} cannot be decoded: {exc}"
        future.set_exception(
            InvocationError(
                errors.DESERIALIZATION_ERROR,
                problem,
                function_id=message.function_id,
                invocation_id=message.invocation_id,
            )
        )
        return
    if error:
        future.set_exception(invocation_error(error, message.function_id, message.invocation_id))
    else:
        future.set_result(result)


def _enqueue_action(action: Any) -> TriggerAction | None:
    """``TriggerAction.Enqueue(queue=...)`` (or ``{"type": "enqueue", "queue": ...}``) as sent; None for none.
    Raises :class:`UsageError` for another action type or an enqueue without a queue name."""
    if action is None:
        return None
    if isinstance(action, Mapping):
        kind, queue = action.get("type"), action.get("queue")
    else:
        kind, queue = getattr(action, "type", None), getattr(action, "queue", None)
    if kind != "enqueue":
        raise UsageError(f"unknown trigger action {kind!r} (TriggerAction.Void() or TriggerAction.Enqueue(queue=...))")
    if not isinstance(queue, str) or not queue:
        raise UsageError("TriggerAction.Enqueue needs a queue name")
    return TriggerAction("enqueue", queue=queue)


def _is_void(action: Any) -> bool:
    if action is None:
        return False
    if isinstance(action, Mapping):
        return action.get("type") == "void"
    return getattr(action, "type", None) == "void"


def _timed_out(message: InvokeFunction, timeout_ms: int) -> InvocationError:
    return InvocationError(
        "TIMEOUT",
        f"invocation timed out after {timeout_ms}ms",
        message.function_id,
        invocation_id=message.invocation_id,
    )


def _time_out(future: asyncio.Future[Any], message: InvokeFunction, timeout_ms: int) -> None:
    if not future.done():
        future.set_exception(_timed_out(message, timeout_ms))
