"""Serving invocations: run each handler where it belongs, answer every call, finish the ends it was given.

``async def`` handlers run on the SDK loop; plain ``def`` handlers run in a thread pool that grows as needed,
so a sync handler may call ``trigger`` on another function of the same worker, at any depth, without deadlock.
Every invocation is answered, whatever its handler raises (BaseExceptions included) or returns (an awaitable
from a sync callable is awaited). The channel ends materialized for a handler belong to its invocation: after
the answer, those it left unfinished are finished for it (see :meth:`iii.sdk.channels.ChannelWriter.keep`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from iii.errors import InvocationError
from iii.protocol import errors
from iii.protocol.codec import decode_value
from iii.protocol.messages import JSON_NULL, InvocationResult, InvokeFunction
from iii.sdk.channels import ChannelReader, ChannelWriter
from iii.sdk.context import InvocationContext, handler_context, take_caller
from iii.sdk.functions import FunctionTable, RegisteredFunction
from iii.sdk.payloads import encode_payload, failure
from iii.sdk.portal import Portal
from iii.sdk.telemetry.exporter import Exporter
from iii.sdk.telemetry.spans import ExecutionSpan

log = logging.getLogger("iii.sdk")

HANDLER_THREADS: Final = 4096
"""Upper bound of the sync-handler pool; threads are created only when every existing one is busy."""

End = ChannelReader | ChannelWriter
Materialize = Callable[[Any, list[End]], Any]
"""Replace the channel refs in a payload by live ends, listing them."""


@dataclass
class Invocation:
    """One call being served: what to answer, and the channel ends its handler was given."""

    invocation_id: str
    function: RegisteredFunction
    ends: list[End] = field(default_factory=list)
    awaitable: Any = None
    """What a sync callable returned when it is awaitable (awaited on the SDK loop)."""
    span: ExecutionSpan | None = None
    """The span recorded around the handler (None with telemetry off)."""


class Server:
    """Runs the handlers of one worker's functions and sends their answers (on the SDK loop)."""

    def __init__(
        self,
        portal: Portal,
        functions: FunctionTable,
        send: Callable[[Any], bool],
        release_ends: Callable[[list[dict[str, Any]], str], None],
        materialize: Materialize,
        telemetry: Exporter | None = None,
    ) -> None:
        self._portal = portal
        self._telemetry = telemetry
        self._functions = functions
        self._send = send
        self._release_ends = release_ends
        self._materialize = materialize
        self._pool = concurrent.futures.ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="iii-handler")
        self.tasks: set[asyncio.Task[None]] = set()
        """Handler tasks and end clean-ups still running (shutdown cancels and awaits them)."""

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run_sync(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a plain callable in the handler pool (off the SDK loop) and await its result."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def on_invocation(self, message: InvokeFunction) -> None:
        invocation_id = message.invocation_id or ""
        function = self._functions.get(message.function_id)
        if function is None:
            not_here = {
                "code": errors.FUNCTION_NOT_FOUND,
                "message": f"function {message.function_id} is not served here",
            }
            self.reply(invocation_id, message.function_id, error=not_here)
            return
        invocation = Invocation(invocation_id, function)
        telemetry = self._telemetry
        span = None
        if telemetry is not None:
            span = invocation.span = telemetry.start_span(function.function_id, message.traceparent, message.baggage)
        try:
            data = decode_value(message.data)
            caller = take_caller(data)
            data = self._materialize(data, invocation.ends)
            metadata = decode_value(message.metadata)
        except Exception as exc:
            self._complete(invocation, error=failure(exc))
            return
        args = (data, metadata) if function.wants_metadata else (data,)
        context = handler_context(
            InvocationContext(
                function_id=function.function_id,
                invocation_id=invocation_id,
                caller={"worker_id": caller} if caller is not None else None,
                metadata=metadata,
                traceparent=message.traceparent,
                baggage=message.baggage,
                observe_depth=message.observe_depth or 0,
                trace_id=span.trace_id if span is not None else None,
                span_id=span.span_id if span is not None else None,
            ),
            telemetry,
        )
        if function.is_async:
            self.track(self._portal.loop.create_task(self._run_async(invocation, args), context=context))
        else:
            future = self._pool.submit(context.run, function.handler, *args)
            future.add_done_callback(lambda done: self._from_thread(self._reply_from, invocation, done, context))

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a handler's task referenced until it ends (shutdown waits for them)."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _from_thread(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback`` on the SDK loop; dropped if the worker has shut down meanwhile."""
        if not self._portal.call_soon(callback, *args):
            log.debug("the worker shut down before %s finished", getattr(callback, "__name__", callback))

    async def _run_async(self, invocation: Invocation, args: tuple[Any, ...]) -> None:
        """Run an ``async def`` handler (or await what a sync callable returned) and answer, whatever happens.

        Every exception, BaseExceptions included (a cancelled task, ``sys.exit()``), becomes the error result:
        a handler can neither leave its caller waiting nor stop the SDK's loop.
        """
        try:
            result = await invocation.function.handler(*args) if args else await invocation.awaitable
        except BaseException as exc:  # answered, never re-raised into the SDK's loop
            self._complete(invocation, error=failure(exc))
        else:
            self._complete(invocation, result=result)

    def _reply_from(
        self, invocation: Invocation, done: concurrent.futures.Future[Any], context: contextvars.Context
    ) -> None:
        if done.cancelled():
            stopped = {"code": errors.INVOCATION_STOPPED, "message": "the worker is shutting down"}
            self._complete(invocation, error=stopped)
            return
        error = done.exception()
        if error is not None:
            self._complete(invocation, error=failure(error))
            return
        result = done.result()
        if inspect.isawaitable(result):  # a def (or lambda) that returned a coroutine: await it here
            invocation.awaitable = result
            self.track(self._portal.loop.create_task(self._run_async(invocation, ()), context=context))
            return
        self._complete(invocation, result=result)

    def _complete(self, invocation: Invocation, *, result: Any = None, error: Any = None) -> None:
        """Answer the call, then finish the channel ends the handler was given and left unfinished."""
        self.reply(invocation.invocation_id, invocation.function.function_id, result=result, error=error)
        if invocation.span is not None and self._telemetry is not None:
            self._telemetry.end_span(invocation.span, error)
        unfinished = [end for end in invocation.ends if not end._kept and not end._finished()]
        if unfinished:
            reason = f"the handler of {invocation.function.function_id} returned without finishing it"
            self.track(self._portal.loop.create_task(self._abandon(unfinished, reason)))

    async def _abandon(self, ends: list[End], reason: str) -> None:
        """Close what was connected; ask the engine to release what never was (its peer is told)."""
        outcomes = await asyncio.gather(*(end._abandon(reason) for end in ends), return_exceptions=True)
        never_connected = [end.ref.model_dump() for end, outcome in zip(ends, outcomes, strict=True) if outcome is True]
        if never_connected:
            self._release_ends(never_connected, reason)

    def reply(self, invocation_id: str, function_id: str, *, result: Any = None, error: Any = None) -> None:
        """Send one answer; a result that cannot be sent (not JSON, too big) becomes an error the caller gets."""
        try:
            # None is no result: the field is left out, as the reference SDKs and engine do (a Node caller then
            # gets undefined, not null).
            result_raw = encode_payload(result) if error is None and result is not None else JSON_NULL
        except TypeError as exc:
            error = {"code": errors.INVOCATION_FAILED, "message": f"the result could not be sent: {exc}"}
            result_raw = JSON_NULL
        error_raw = encode_payload(error) if error is not None else JSON_NULL
        message = InvocationResult(
            invocation_id=invocation_id, function_id=function_id, result=result_raw, error=error_raw
        )
        try:
            sent = self._send(message)
        except InvocationError as exc:  # too big: the caller gets the reason instead
            log.error("%s", exc.message)
            reason = encode_payload({"code": exc.code, "message": exc.message})
            sent = self._send(InvocationResult(invocation_id=invocation_id, function_id=function_id, error=reason))
        if not sent:
            log.warning("result of %s dropped: not connected (the engine has failed the call)", function_id)
