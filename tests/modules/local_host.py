"""An in-process :class:`~iii.modules.api.ModuleHost` for unit tests of modules, without an engine or sockets.

It keeps what a module registers and lets a test act as the rest of the system: call the module's functions
(:meth:`LocalHost.call`), serve functions the module invokes (:meth:`LocalHost.serve`), bind functions to the
module's trigger types (:meth:`LocalHost.bind`), register functions of the module's kind as a worker would
(:meth:`LocalHost.register_kind`), say that a worker left (:meth:`LocalHost.worker_left`) and send the module
telemetry (:attr:`LocalHost.telemetry`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
from collections.abc import Callable, Iterable
from typing import Any

from iii.modules.api import (
    BindingInfo,
    CallInfo,
    FunctionError,
    FunctionKind,
    FunctionRegistration,
    Handler,
    InvocationError,
    TelemetrySink,
    TriggerProvider,
    WorkerGate,
)


class LocalHost:
    def __init__(self) -> None:
        self.functions: dict[str, Handler] = {}
        self.descriptions: dict[str, str] = {}
        self.trigger_types: dict[str, TriggerProvider] = {}
        self.kinds: dict[str, FunctionKind] = {}
        self.served: dict[str, Callable[[Any], Any]] = {}
        """Functions of the test's "workers" that the module may invoke."""
        self.invocations: list[tuple[str, Any]] = []
        """Every invoke/invoke_void the module made, in order."""
        self.call_context: list[tuple[Any, str | None]] = []
        """The metadata and traceparent of each invocation, in the order of :attr:`invocations`."""
        self._left_callbacks: list[Callable[[str], None]] = []
        self._binding_ids = itertools.count(1)
        self._void_tasks: set[asyncio.Task[Any]] = set()
        self.gate: WorkerGate | None = None
        """The gate of the worker port the module opened (:meth:`serve_workers`), for the test to knock on."""
        self.telemetry: TelemetrySink | None = None
        """Where the module receives telemetry (:meth:`receive_telemetry`), for the test to send it."""

    # --- ModuleHost ------------------------------------------------------------------------------------

    def register_function(
        self,
        function_id: str,
        handler: Handler,
        *,
        description: str = "",
        request_format: Any = None,
        response_format: Any = None,
    ) -> None:
        assert function_id not in self.functions, f"{function_id} registered twice"
        self.functions[function_id] = handler
        self.descriptions[function_id] = description

    def register_trigger_type(self, type_id: str, provider: TriggerProvider, *, description: str = "") -> None:
        assert type_id not in self.trigger_types, f"{type_id} registered twice"
        self.trigger_types[type_id] = provider

    def provide_function_kind(self, field: str, kind: FunctionKind) -> None:
        assert field not in self.kinds, f"function kind {field} provided twice"
        self.kinds[field] = kind

    async def invoke(
        self,
        function_id: str,
        data: Any,
        *,
        timeout_s: float | None = None,
        metadata: Any = None,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> Any:
        self.invocations.append((function_id, data))
        self.call_context.append((metadata, traceparent))
        target = self.served.get(function_id)
        if target is None:
            raise InvocationError("function_not_found", f"Function {function_id} not found")
        try:
            result = target(data)
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, timeout_s) if timeout_s else await result
        except InvocationError:
            raise
        except Exception as exc:
            raise InvocationError("invocation_failed", str(exc)) from exc
        return result

    def invoke_void(self, function_id: str, data: Any) -> None:
        async def run() -> None:
            with contextlib.suppress(InvocationError):  # a void call's failure reaches nobody
                await self.invoke(function_id, data)

        task = asyncio.get_running_loop().create_task(run())
        self._void_tasks.add(task)
        task.add_done_callback(self._void_tasks.discard)

    def on_worker_left(self, callback: Callable[[str], None]) -> None:
        self._left_callbacks.append(callback)

    async def create_channel(self, buffer_frames: int = 64) -> Any:
        raise NotImplementedError("LocalHost has no channels: test a module that uses them on an engine")

    def start_span(
        self, name: str, traceparent: str | None, attributes: Iterable[tuple[str, str]] = (), *, root: bool = False
    ) -> None:
        """No spans: a module's work here is not traced."""
        return None

    def receive_telemetry(self, sink: TelemetrySink) -> None:
        assert self.telemetry is None, "telemetry received twice"
        self.telemetry = sink

    async def serve_workers(self, host: str, port: int, gate: WorkerGate) -> Any:
        """No port is opened: the gate is kept for the test (:attr:`gate`)."""
        assert self.gate is None, "worker port opened twice"
        self.gate = gate
        return _NoPort(host, port)

    # --- the test's side -------------------------------------------------------------------------------

    async def call(
        self, function_id: str, data: Any, worker_id: str | None = "test-worker", traceparent: str | None = None
    ) -> Any:
        """Call one of the module's functions as a worker would (in the trace context ``traceparent``, if given);
        raises FunctionError as the module did."""
        handler = self.functions[function_id]
        result = handler(data, CallInfo(worker_id=worker_id, traceparent=traceparent))
        if inspect.isawaitable(result):
            result = await result
        return result

    async def call_error(self, function_id: str, data: Any) -> FunctionError:
        """Call a module's function that must fail; returns its FunctionError."""
        try:
            await self.call(function_id, data)
        except FunctionError as error:
            return error
        raise AssertionError(f"{function_id}({data!r}) did not fail")

    def register_kind(self, field: str, function_id: str, config: Any, worker_id: str = "test-worker") -> None:
        """Register ``function_id`` with ``field`` set to ``config``, as a worker would: the module's kind accepts
        it (then :meth:`call` calls it) or raises its FunctionError."""
        handler = self.kinds[field].accept(FunctionRegistration(function_id, config, worker_id))
        self.functions[function_id] = handler

    def serve(self, function_id: str, function: Callable[[Any], Any]) -> None:
        """Serve ``function_id`` as a worker's function the module may invoke (sync or async)."""
        self.served[function_id] = function

    def bind(
        self, trigger_type: str, function_id: str, config: dict[str, Any], worker_id: str | None = "test-worker"
    ) -> tuple[BindingInfo, str | None]:
        """Bind ``function_id`` to ``trigger_type``: returns the binding and the provider's refusal (or None)."""
        binding = BindingInfo(
            binding_id=f"binding-{next(self._binding_ids)}",
            trigger_type=trigger_type,
            function_id=function_id,
            config=config,
            worker_id=worker_id,
        )
        return binding, self.trigger_types[trigger_type].activate(binding)

    def unbind(self, binding: BindingInfo) -> None:
        self.trigger_types[binding.trigger_type].deactivate(binding)

    def worker_left(self, worker_id: str) -> None:
        for callback in self._left_callbacks:
            callback(worker_id)

    async def settle(self) -> None:
        """Wait for the void invocations started so far."""
        while self._void_tasks:
            await asyncio.gather(*list(self._void_tasks))


class _NoPort:
    """What :meth:`LocalHost.serve_workers` gives a module instead of a port."""

    def __init__(self, host: str, port: int) -> None:
        self.port = port
        self.url = f"ws://{host}:{port}"

    async def close(self) -> None:
        pass
