"""The in-process :class:`~iii.modules.api.ModuleHost`: how a module inside the engine reaches the core.

A module's functions become entries served inside the engine (no round trip to any worker; workers cannot take
their ids), its trigger types are provided inside the engine, and its calls start in
:meth:`~iii.engine.core.Core.start_call` like every other call. Nothing else of the core is reachable from a
module: it gets this host and nothing more.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from iii.engine.registry import BuiltinFailure
from iii.modules.api import (
    BindingInfo,
    CallInfo,
    DescribingProvider,
    FunctionError,
    Handler,
    InvocationError,
    TriggerProvider,
)
from iii.protocol import errors
from iii.protocol.codec import decode_value, encode_value
from iii.protocol.messages import JSON_NULL, is_null

if TYPE_CHECKING:
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
    """The caller of one :meth:`InProcessHost.invoke`: settles a future with (result, error)."""

    write_paused = False

    def __init__(self, future: asyncio.Future[tuple[msgspec.Raw, msgspec.Raw]]) -> None:
        self._future = future

    def deliver_result(self, invocation_id: str, function_id: str, result: msgspec.Raw, error: msgspec.Raw) -> None:
        if not self._future.done():  # the module may have stopped waiting
            self._future.set_result((msgspec.Raw(bytes(result)), msgspec.Raw(bytes(error))))


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


class InProcessHost:
    """What one module may do, done directly on the core (see the module docstring)."""

    def __init__(self, core: Core, module: str) -> None:
        self._core = core
        self._module = module
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

        def serve(source: WorkerConnection | None, data: Any) -> Any:
            call = CallInfo(worker_id=source.worker_id if source is not None else None)
            try:
                outcome = handler(data, call)
            except FunctionError as exc:
                raise BuiltinFailure(exc.code, exc.message) from None
            if inspect.isawaitable(outcome):
                return _translated(outcome)
            return outcome

        self._core.functions.add_builtin(
            function_id,
            serve,
            description,
            module=self._module,
            request_format=_as_raw(request_format),
            response_format=_as_raw(response_format),
        )

    def register_trigger_type(self, type_id: str, provider: TriggerProvider, *, description: str = "") -> None:
        if self._core.triggers.is_builtin(type_id):
            raise ValueError(f"module {self._module}: trigger type {type_id} is already provided")
        self._core.triggers.add_builtin(type_id, _Provider(provider), description, module=self._module)

    async def invoke(self, function_id: str, data: Any, *, timeout_s: float | None = None) -> Any:
        future: asyncio.Future[tuple[msgspec.Raw, msgspec.Raw]] = asyncio.get_running_loop().create_future()
        problem = self._core.start_call(
            function_id,
            _as_raw(data),
            caller=_Answer(future),
            caller_invocation_id=f"{self._module}-{next(self._call_ids)}",
            timeout_s=timeout_s,
        )
        if problem is not None:
            raise InvocationError(*problem)
        result, error = await future
        if not is_null(error):
            raise InvocationError(*_error_fields(error))
        return _decoded(result)

    def invoke_void(self, function_id: str, data: Any) -> None:
        problem = self._core.start_call(function_id, _as_raw(data), caller=None)
        if problem is not None:
            log.debug("module=%s void call of %s not made: %s", self._module, function_id, problem[1])

    def on_worker_left(self, callback: Callable[[str], None]) -> None:
        self._core.on_worker_left(callback)


async def _translated(pending: Awaitable[Any]) -> Any:
    """Await a module handler's result; its FunctionError becomes the core's BuiltinFailure."""
    try:
        return await pending
    except FunctionError as exc:
        raise BuiltinFailure(exc.code, exc.message) from None
