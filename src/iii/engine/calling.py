"""Calls: the one place a call starts, the functions served inside the engine, and how every call ends.

Whoever makes a call (a worker's ``invokefunction``, an HTTP request, a fired trigger, a module) starts it with
:meth:`Calls.start`; its outcome reaches its caller through :meth:`~iii.engine.peers.Caller.deliver_result`:
a worker's answer (:meth:`Calls.on_result`), the answer of a function served inside the engine (at once, or
when the awaitable it returned completes), or a failure the engine decides (:meth:`Calls.fail`: the deadline
passed, the host left, the engine stops). No sockets: the callers and hosts are the protocols of
:mod:`iii.engine.peers`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from iii.engine.config import EngineConfig
from iii.engine.metrics import OK, EngineMetrics
from iii.engine.observer_records import OBSERVE_FEATURE
from iii.engine.observing import Observing, stamp_caller
from iii.engine.peers import Caller
from iii.engine.registry import (
    CALL_TRACEPARENT,
    BuiltinFailure,
    BuiltinInputError,
    BuiltinLimitError,
    FunctionEntry,
    FunctionRegistry,
)
from iii.engine.router import InvocationRouter, PendingCall
from iii.engine.spans import EngineSpans, OpenSpan, call_span_wanted
from iii.protocol import errors
from iii.protocol.codec import decode_value, encode, encode_value, with_caller_worker_id
from iii.protocol.messages import JSON_NULL, Delivery, InvocationResult, is_null

if TYPE_CHECKING:
    from iii.engine.links import EngineLink
    from iii.engine.worker_socket import WorkerConnection

log = logging.getLogger("iii.engine")

_SPAN_ATTRIBUTE_LISTS: Final = 4096
"""At most this many attribute lists of call spans are kept for reuse."""


def error_raw(code: str, message: str) -> msgspec.Raw:
    """An ``invocationresult.error`` value."""
    return msgspec.Raw(encode_value({"code": code, "message": message}))


def _error_parts(error: msgspec.Raw) -> tuple[str, str]:
    """The ``code`` (``invocation_failed`` if it has none: the outcome in metrics) and ``message`` of an
    ``invocationresult.error`` (a span's error)."""
    try:
        value = decode_value(error)
    except (msgspec.DecodeError, RecursionError):
        value = None
    if not isinstance(value, dict):
        return errors.INVOCATION_FAILED, ""
    code, message = value.get("code"), value.get("message")
    return (
        code if isinstance(code, str) and code else errors.INVOCATION_FAILED,
        message if isinstance(message, str) else "",
    )


def _builtin_error(entry: FunctionEntry, exc: Exception) -> msgspec.Raw:
    """The error a function served inside the engine answers for ``exc``."""
    if isinstance(exc, BuiltinInputError):
        return error_raw(errors.DESERIALIZATION_ERROR, str(exc))
    if isinstance(exc, msgspec.DecodeError):
        return error_raw(errors.DESERIALIZATION_ERROR, f"the payload cannot be decoded: {exc}")
    if isinstance(exc, BuiltinLimitError):
        return error_raw(errors.LIMIT_EXCEEDED, str(exc))
    if isinstance(exc, BuiltinFailure):
        return error_raw(exc.code, exc.message)
    log.error("function %s failed", entry.function_id, exc_info=exc)
    return error_raw(errors.INVOCATION_FAILED, f"{type(exc).__name__}: {exc}")


def _encoded(entry: FunctionEntry, value: Any) -> tuple[msgspec.Raw, msgspec.Raw]:
    """(result, error) for a value a function served inside the engine returned.

    None is no result (left out of the caller's ``invocationresult``), as the reference engine sends a
    function's ``None``: the official Node SDK 0.22 resolves a missing result as ``undefined``, which its own
    tests expect of ``state::get`` on a missing key, and an explicit ``null`` as ``null``.
    """
    if value is None:
        return JSON_NULL, JSON_NULL
    try:
        return msgspec.Raw(encode_value(value)), JSON_NULL
    except Exception as exc:  # not JSON (an object, 1e999, ...)
        return JSON_NULL, error_raw(
            errors.INVOCATION_FAILED, f"the result of {entry.function_id} cannot be sent: {exc}"
        )


class Calls:
    """The calls of one engine: starting them, serving the functions that live inside it, ending them."""

    def __init__(
        self, config: EngineConfig, functions: FunctionRegistry, router: InvocationRouter, metrics: EngineMetrics
    ) -> None:
        self.config = config
        self.functions = functions
        self.router = router
        self.metrics = metrics
        self._builtin_tasks: set[asyncio.Task[Any]] = set()
        self.observing: Observing | None = None
        """The observers of calls (set by the core), if the engine has them."""
        self.spans: EngineSpans | None = None
        """The engine's own spans (set by the core when a module receives telemetry; :mod:`iii.engine.spans`)."""
        self._span_attributes: dict[tuple[str, str | None, str | None], tuple[str, list[list[str]]]] = {}
        """The names and attributes of ``call <fn>`` spans, by (function, serving worker, calling worker)."""

    def expire(self) -> None:
        """Fail the calls whose deadline has passed (``TIMEOUT``); the server calls this on its ticks."""
        expired = self.router.take_expired()
        if expired:
            self.fail(expired, errors.TIMEOUT, "invocation timed out in the engine")

    def stop_all(self, message: str) -> int:
        """Fail every pending call with ``invocation_stopped`` (the engine is stopping); returns how many."""
        stopped = self.router.take_all()
        self.fail(stopped, errors.INVOCATION_STOPPED, message)
        for task in list(self._builtin_tasks):
            task.cancel()
        return len(stopped)

    def start(
        self,
        function_id: str,
        data: msgspec.Raw,
        *,
        caller: Caller | None,
        caller_invocation_id: str | None = None,
        timeout_s: float | None = None,
        source: WorkerConnection | None = None,
        metadata: msgspec.Raw = JSON_NULL,
        traceparent: str | None = None,
        baggage: str | None = None,
        asserted_caller: msgspec.Raw = JSON_NULL,
        caller_info: dict[str, Any] | None = None,
        observe_depth: int | None = None,
        activation: msgspec.Raw = JSON_NULL,
    ) -> tuple[str, str] | None:
        """Start a call of ``function_id``: the one place every call starts.

        The outcome goes to ``caller.deliver_result(caller_invocation_id, ...)``; without a caller the call is
        void and its outcome dropped. ``source`` is the worker that asked, if one did: its id reaches the callee
        in the payload (as the reference engine does), its limit of pending calls applies, and its reading is
        held while the callee's outgoing buffer is full. ``timeout_s`` defaults to the engine's invocation
        timeout. Returns ``(code, message)`` instead when the call cannot start (nothing is delivered then).

        observe.v1: the callee learns who called (``caller``: ``caller_info`` as given, or the ``source`` worker
        stamped by the engine with the handler it ``asserted_caller``), the call's ``observe_depth`` and, for an
        observer's activation, ``activation``; a call of a function with observers is watched until it ends.

        Spans (:mod:`iii.engine.spans`): when the engine records them and ``traceparent`` is in a sampled trace,
        the call gets a ``call <fn>`` span, its child, and the callee a ``traceparent`` naming that span.
        """
        entry = self.functions.get(function_id)
        if entry is None:
            return errors.FUNCTION_NOT_FOUND, f"Function {function_id} not found"
        if entry.handler is not None:
            span = None
            if self.spans is not None and call_span_wanted(function_id, traceparent):
                span = self._call_span(self.spans, entry, traceparent, source)
                traceparent = span.traceparent
            self._run_builtin(entry, data, caller, caller_invocation_id, source, traceparent, span)
            return None
        owner = entry.owner
        assert owner is not None
        if (
            source is not None
            and caller is not None
            and self.router.pending_for_caller(source) >= self.config.worker_max_pending_calls
        ):
            limit = self.config.worker_max_pending_calls
            return (
                errors.LIMIT_EXCEEDED,
                f"this worker has {limit} calls waiting for results, its limit (--worker-max-pending-calls)",
            )
        call = self.router.start(
            function_id,
            owner,
            caller,
            caller_invocation_id,
            self.config.invocation_timeout_s if timeout_s is None else timeout_s,
        )
        if self.spans is not None and call_span_wanted(function_id, traceparent):
            call.span = span = self._call_span(self.spans, entry, traceparent, source)
            traceparent = span.traceparent
        # The common case (no observers, a callee that does not speak observe.v1) costs two lookups: who called
        # is worked out only for observers and for callees that read it.
        observing = self.observing
        observed = None
        if observing is not None and function_id in observing.table.observed_functions:
            observed = observing.begin(function_id, data, observe_depth)
        caller_raw = JSON_NULL
        if source is not None and (observed is not None or OBSERVE_FEATURE in owner.features):
            caller_info = stamp_caller(source, asserted_caller)
        if caller_info is not None:
            caller_raw = msgspec.Raw(encode_value(caller_info))
        if observed is not None:
            observed.caller = caller_info
            observed.metadata = None if is_null(metadata) else decode_value(metadata)
            call.observed = observed
        delivery = Delivery(
            invocation_id=call.dispatch_id,
            function_id=function_id if owner.session is None else owner.session.local_id(function_id),
            data=with_caller_worker_id(data, source.worker_id) if source is not None else data,
            metadata=metadata,
            traceparent=traceparent,
            baggage=baggage,
            caller=caller_raw,
            observe_depth=observe_depth or None,
            activation=activation,
        )
        owner.send_message(encode(delivery))
        if source is not None and owner.write_paused:
            source.hold_reading_for(owner)
        return None

    def _call_span(
        self, spans: EngineSpans, entry: FunctionEntry, traceparent: str | None, source: WorkerConnection | None
    ) -> OpenSpan:
        """The ``call <fn>`` span of a call of ``entry``, with the reference's attributes and who serves it and
        who asked. The attributes of the calls between the same workers are one list, made once: spans share it
        (their records are read-only; :meth:`~iii.engine.spans.OpenSpan.set` copies it)."""
        function_id = entry.function_id
        owner_id = entry.owner.worker_id if entry.owner is not None else None
        source_id = source.worker_id if source is not None else None
        key = (function_id, owner_id, source_id)
        made = self._span_attributes.get(key)
        if made is None:
            internal = entry.handler is not None and entry.kind is None
            attributes = [
                ["faas.invoked_name", function_id],
                ["faas.trigger", "other"],
                ["function_id", function_id],
                ["iii.function.kind", "internal" if internal else "user"],
            ]
            if owner_id is not None:
                attributes.append(["iii.worker.id", owner_id])
            if source_id is not None:
                attributes.append(["iii.caller.worker_id", source_id])
            if len(self._span_attributes) >= _SPAN_ATTRIBUTE_LISTS:  # workers come and go: start over
                self._span_attributes.clear()
            made = self._span_attributes[key] = (f"call {function_id}", attributes)
        return spans.start_with(made[0], traceparent, made[1])

    def _run_builtin(
        self,
        entry: FunctionEntry,
        data: msgspec.Raw,
        caller: Caller | None,
        caller_invocation_id: str | None,
        source: WorkerConnection | None,
        traceparent: str | None = None,
        span: OpenSpan | None = None,
    ) -> None:
        """Run a function served inside the engine (``engine::*``, a module's); answer at once, or when the
        awaitable it returned completes. The handler, and the task that awaits what it returned, see
        ``traceparent`` in :data:`CALL_TRACEPARENT` (a module's ``CallInfo.traceparent``; the trace what it
        starts joins, a channel's span)."""
        assert entry.handler is not None
        if entry.kind is not None and source is not None:  # a worker's function: its caller is named, as for any
            data = with_caller_worker_id(data, source.worker_id)
        context = CALL_TRACEPARENT.set(traceparent)
        try:
            value = entry.handler(source, decode_value(data))
            if inspect.isawaitable(value):  # the task copies the context now, with the call's traceparent
                task = asyncio.ensure_future(
                    self._finish_builtin(entry, value, caller, caller_invocation_id, source, span)
                )
                self._builtin_tasks.add(task)
                task.add_done_callback(self._builtin_tasks.discard)
                return
        except Exception as exc:
            error = _builtin_error(entry, exc)
            self._answer_builtin(entry, caller, caller_invocation_id, source, JSON_NULL, error, span)
            return
        finally:
            CALL_TRACEPARENT.reset(context)
        self._answer_builtin(entry, caller, caller_invocation_id, source, *_encoded(entry, value), span)

    async def _finish_builtin(
        self,
        entry: FunctionEntry,
        pending: Awaitable[Any],
        caller: Caller | None,
        caller_invocation_id: str | None,
        source: WorkerConnection | None,
        span: OpenSpan | None,
    ) -> None:
        try:
            value = await pending
        except asyncio.CancelledError:  # the engine is stopping
            error = error_raw(errors.INVOCATION_STOPPED, "Invocation stopped: the engine is shutting down")
            self._answer_builtin(entry, caller, caller_invocation_id, source, JSON_NULL, error, span)
            raise
        except Exception as exc:
            error = _builtin_error(entry, exc)
            self._answer_builtin(entry, caller, caller_invocation_id, source, JSON_NULL, error, span)
            return
        self._answer_builtin(entry, caller, caller_invocation_id, source, *_encoded(entry, value), span)

    def _answer_builtin(
        self,
        entry: FunctionEntry,
        caller: Caller | None,
        caller_invocation_id: str | None,
        source: WorkerConnection | None,
        result: msgspec.Raw,
        error: msgspec.Raw,
        span: OpenSpan | None = None,
    ) -> None:
        if span is not None:  # ended with the call's outcome
            span.end(None if is_null(error) else _error_parts(error))
        if caller is None or caller_invocation_id is None:
            return
        caller.deliver_result(caller_invocation_id, entry.function_id, result, error)
        if source is not None and source is caller and source.write_paused:
            source.hold_reading_for(source)  # it asks faster than it reads its answers

    def on_result(self, worker: WorkerConnection | EngineLink, message: InvocationResult) -> None:
        """A worker answered a call it was given: the result goes to the call's caller."""
        call = self.router.complete(message.invocation_id, worker)
        if call is None:
            log.debug("worker=%s result for unknown or foreign invocation dropped", worker.worker_id)
            return
        failure = None if is_null(message.error) else _error_parts(message.error)  # decoded once, for both
        self.metrics.call_finished(OK if failure is None else failure[0], time.monotonic() - call.started_at)
        if call.span is not None:
            call.span.end(failure)
        if call.observed is not None and self.observing is not None:
            self.observing.end(call, message.result, message.error)
        if call.caller is not None and call.caller_invocation_id is not None:
            call.caller.deliver_result(call.caller_invocation_id, call.function_id, message.result, message.error)
            if call.caller.write_paused:
                worker.hold_reading_for(call.caller)

    def abandon(self, caller: Caller) -> int:
        """Stop waiting on behalf of ``caller`` (it disconnected, or stopped waiting): the hosts' late results go
        nowhere. The calls' spans end now, marked ``iii.call.abandoned``. Returns how many calls there were."""
        calls = self.router.drop_caller(caller)
        for call in calls:
            if call.span is not None:
                call.span.set("iii.call.abandoned", "true")
                call.span.end()
        return len(calls)

    def fail(self, calls: list[PendingCall], code: str, message: str) -> None:
        """Answer ``calls`` with the error ``code`` (they are over: stopped, timed out, their host left)."""
        error = error_raw(code, message)
        now = time.monotonic()
        for call in calls:
            self.metrics.call_finished(code, now - call.started_at)
            if call.span is not None:
                call.span.end((code, message))
            if call.observed is not None and self.observing is not None:
                self.observing.end(call, JSON_NULL, error)
            if call.caller is not None and call.caller_invocation_id is not None:
                call.caller.deliver_result(call.caller_invocation_id, call.function_id, JSON_NULL, error)
