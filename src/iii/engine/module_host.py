"""The in-process :class:`~iii.modules.api.ModuleHost`: how a module inside the engine reaches the core.

A module's functions become entries served inside the engine (no round trip to any worker; workers cannot take
their ids), so do the functions of its kind that workers register (owned by the worker, served by the module's
handler), its trigger types are provided inside the engine, its calls start in
:meth:`~iii.engine.calling.Calls.start` like every other call, and its channels are the core's, with ends of
the engine's own for the module (:mod:`iii.engine.module_channels`), and the worker ports it opens are the
server's (:mod:`iii.engine.worker_ports`). Nothing else of the core is reachable from a module: it gets this host
and nothing more.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from iii.engine.module_channels import InProcessChannel
from iii.engine.registry import CALL_TRACEPARENT, BuiltinFailure, BuiltinHandler
from iii.engine.spans import OpenSpan, in_trace
from iii.modules.api import (
    BindingInfo,
    CallInfo,
    DescribingProvider,
    FunctionError,
    FunctionKind,
    FunctionRegistration,
    Handler,
    InvocationError,
    TelemetrySink,
    TriggerProvider,
    WorkerGate,
    WorkerPort,
)
from iii.protocol import errors
from iii.protocol.codec import decode_value, encode_value
from iii.protocol.messages import JSON_NULL, is_null

if TYPE_CHECKING:
    from iii.engine.calling import Calls
    from iii.engine.core import Core
    from iii.engine.triggers import Binding
    from iii.engine.worker_socket import WorkerConnection

log = logging.getLogger("iii.engine.modules")


def _as_raw(value: Any) -> msgspec.Raw:
    return JSON_NULL if value is None else msgspec.Raw(encode_value(value))


def _decoded(raw: msgspec.Raw) -> Any:
    return None if is_null(raw) else decode_value(raw)


def _error_fields(error: msgspec.Raw) -> tuple[str, str]:
    value = _decoded(error)
    if isinstance(value, dict):
        return str(value.get("code") or errors.INVOCATION_FAILED), str(value.get("message") or "")
    return errors.INVOCATION_FAILED, str(value)


class _Answer:
    """The caller of one :meth:`InProcessHost.invoke`: settles its future with the decoded result or the error.
    Cancelling the future drops the pending call."""

    write_paused = False

    def __init__(self, future: asyncio.Future[Any], calls: Calls) -> None:
        self._future = future
        self._calls = calls
        future.add_done_callback(self._on_done)

    def deliver_result(self, invocation_id: str, function_id: str, result: msgspec.Raw, error: msgspec.Raw) -> None:
        future = self._future
        if future.done():  # the module stopped waiting
            return
        if not is_null(error):
            future.set_exception(InvocationError(*_error_fields(error)))
            return
        try:
            future.set_result(_decoded(result))
        except (msgspec.DecodeError, RecursionError) as exc:  # valid JSON no Python value holds (1e999)
            message = f"the result of {function_id} cannot be decoded: {exc}"
            future.set_exception(InvocationError(errors.DESERIALIZATION_ERROR, message))

    def _on_done(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._calls.abandon(self)  # the module stopped waiting: a late result goes nowhere


class _Provider:
    """A module's trigger provider, as the core's trigger registry sees it."""

    def __init__(self, provider: TriggerProvider) -> None:
        self._provider = provider

    def activate(self, binding: Binding) -> str | None:
        try:
            config = _decoded(binding.config)
        except (msgspec.DecodeError, RecursionError) as exc:
            return f"the binding's config cannot be decoded: {exc}"
        if config is None:
            config = {}
        if not isinstance(config, dict):
            return f"a {binding.trigger_type} binding's config must be a JSON object, got {type(config).__name__}"
        return self._provider.activate(_binding_info(binding, config))

    def describe(self, binding: Binding) -> Mapping[str, Any]:
        if isinstance(self._provider, DescribingProvider):
            return self._provider.describe(binding.binding_id)
        return {}

    def deactivate(self, binding: Binding) -> None:
        try:
            config = _decoded(binding.config)
        except (msgspec.DecodeError, RecursionError):
            config = None
        self._provider.deactivate(_binding_info(binding, config if isinstance(config, dict) else {}))


def _binding_info(binding: Binding, config: dict[str, Any]) -> BindingInfo:
    try:
        metadata = _decoded(binding.metadata)
    except (msgspec.DecodeError, RecursionError):
        metadata = None
    worker_id = getattr(binding.owner, "worker_id", None)
    return BindingInfo(
        binding_id=binding.binding_id,
        trigger_type=binding.trigger_type,
        function_id=binding.function_id,
        config=config,
        metadata=metadata,
        worker_id=worker_id if isinstance(worker_id, str) else None,
    )


class WorkerPorts(Protocol):
    """Who opens a module's worker ports: the engine's server (a core alone has none)."""

    async def open_worker_port(self, module: str, host: str, port: int, gate: WorkerGate) -> WorkerPort:
        """A port where ``gate`` admits workers for ``module``; ``OSError`` if it cannot be bound."""


class InProcessHost:
    """What one module may do, done directly on the core (see the module docstring)."""

    def __init__(self, core: Core, module: str, ports: WorkerPorts | None = None) -> None:
        self._core = core
        self._module = module
        self._ports = ports
        self._call_ids = itertools.count(1)

    def register_function(
        self,
        function_id: str,
        handler: Handler,
        *,
        description: str = "",
        request_format: Any = None,
        response_format: Any = None,
    ) -> None:
        current = self._core.functions.get(function_id)
        if current is not None:
            raise ValueError(f"module {self._module}: function {function_id} is already served")
        self._core.functions.add_builtin(
            function_id,
            _served_by(handler),
            description,
            module=self._module,
            request_format=_as_raw(request_format),
            response_format=_as_raw(response_format),
        )

    def register_trigger_type(self, type_id: str, provider: TriggerProvider, *, description: str = "") -> None:
        if self._core.triggers.is_builtin(type_id):
            raise ValueError(f"module {self._module}: trigger type {type_id} is already provided")
        self._core.triggers.add_builtin(type_id, _Provider(provider), description, module=self._module)

    def provide_function_kind(self, field: str, kind: FunctionKind) -> None:
        def accept(
            worker_id: str, function_id: str, config: Any, description: str | None, metadata: Any
        ) -> BuiltinHandler:
            registration = FunctionRegistration(function_id, config, worker_id, description, metadata)
            try:
                handler = kind.accept(registration)
            except FunctionError as exc:
                raise BuiltinFailure(exc.code, exc.message) from None
            return _served_by(handler)

        self._core.provide_function_kind(field, self._module, accept)

    def invoke(
        self,
        function_id: str,
        data: Any,
        *,
        timeout_s: float | None = None,
        metadata: Any = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> asyncio.Future[Any]:
        """The call starts now; the future gives its result (see :mod:`iii.modules.api`)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        problem = self._core.calls.start(
            function_id,
            _as_raw(data),
            caller=_Answer(future, self._core.calls),
            caller_invocation_id=f"{self._module}-{next(self._call_ids)}",
            timeout_s=timeout_s,
            metadata=_as_raw(metadata),
            traceparent=traceparent,
            baggage=baggage,
        )
        if problem is not None:
            future.set_exception(InvocationError(*problem))
        return future

    def invoke_void(self, function_id: str, data: Any) -> None:
        problem = self._core.calls.start(function_id, _as_raw(data), caller=None)
        if problem is not None:
            log.debug("module=%s void call of %s not made: %s", self._module, function_id, problem[1])

    def on_worker_left(self, callback: Callable[[str], None]) -> None:
        self._core.on_worker_left(callback)

    async def create_channel(self, buffer_frames: int = 64) -> InProcessChannel:
        return InProcessChannel(self._core.channels, buffer_frames)

    async def serve_workers(self, host: str, port: int, gate: WorkerGate) -> WorkerPort:
        if self._ports is None:
            raise RuntimeError(f"module {self._module}: this engine has no server to open a worker port on")
        return await self._ports.open_worker_port(self._module, host, port, gate)

    def start_span(
        self, name: str, traceparent: str | None, attributes: Iterable[tuple[str, str]] = (), *, root: bool = False
    ) -> OpenSpan | None:
        spans = self._core.spans
        if spans is None or not (root or in_trace(traceparent)):
            return None
        return spans.start(name, traceparent, attributes)

    def receive_telemetry(self, sink: TelemetrySink) -> None:
        self._core.provide_telemetry_sink(self._module, sink)


def _served_by(handler: Handler) -> BuiltinHandler:
    """The core's handler for a module's: who called becomes a :class:`CallInfo`, a FunctionError the core's
    BuiltinFailure."""

    def serve(source: WorkerConnection | None, data: Any) -> Any:
        call = CallInfo(worker_id=source.worker_id if source is not None else None, traceparent=CALL_TRACEPARENT.get())
        try:
            outcome = handler(data, call)
        except FunctionError as exc:
            raise BuiltinFailure(exc.code, exc.message) from None
        if inspect.isawaitable(outcome):
            return _translated(outcome)
        return outcome

    return serve


async def _translated(pending: Awaitable[Any]) -> Any:
    """Await a module handler's result; its FunctionError becomes the core's BuiltinFailure."""
    try:
        return await pending
    except FunctionError as exc:
        raise BuiltinFailure(exc.code, exc.message) from None
