"""A module as its own worker process: :class:`WorkerHost` does what a module may do over the worker protocol.

The same module code that runs inside the engine (:mod:`iii.modules.api`) runs here next to any engine, ours
or the reference: its functions are registered by an SDK client, its trigger types provided by it, its calls
made with ``trigger``, and workers leaving are heard through the engine's ``engine::workers-available``
trigger type. ``iii worker state --url ws://...`` runs one (:func:`run_module_worker`).

The module lives on the loop that runs :func:`run_module_worker` (its tasks, locks and stores belong to it);
the SDK serves calls on its own loop, and each call is handed to the module's loop and its answer back.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from iii.errors import FunctionError
from iii.errors import InvocationError as CallFailed
from iii.modules.api import BindingInfo, CallInfo, Handler, InvocationError, Module, TriggerProvider
from iii.sdk.client import III
from iii.sdk.context import current_invocation
from iii.sdk.portal import await_on
from iii.sdk.triggers import TriggerConfig, TriggerHandler

log = logging.getLogger("iii.modules")

WORKERS_AVAILABLE = "engine::workers-available"


class WorkerHost:
    """What one module may do, through an SDK client (see the module docstring)."""

    def __init__(self, client: III, module_name: str, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._module = module_name
        self._loop = loop
        self._left: list[Callable[[str], None]] = []

    def register_function(
        self,
        function_id: str,
        handler: Handler,
        *,
        description: str = "",
        request_format: Any = None,
        response_format: Any = None,
    ) -> None:
        loop = self._loop

        async def serve(data: Any) -> Any:
            context = current_invocation()
            caller = context.caller if context is not None else None
            call = CallInfo(worker_id=caller.get("worker_id") if isinstance(caller, dict) else None)
            return await await_on(loop, _run(handler, data, call))

        definition: dict[str, Any] = {"id": function_id, "description": description}
        if request_format is not None:
            definition["request_format"] = request_format
        if response_format is not None:
            definition["response_format"] = response_format
        self._client.register_function(definition, serve)

    def register_trigger_type(self, type_id: str, provider: TriggerProvider, *, description: str = "") -> None:
        self._client.register_trigger_type({"id": type_id, "description": description}, _Provider(self, provider))

    async def invoke(self, function_id: str, data: Any, *, timeout_s: float | None = None) -> Any:
        request: dict[str, Any] = {"function_id": function_id, "payload": data}
        if timeout_s is not None:
            request["timeout_ms"] = max(1, int(timeout_s * 1000))
        try:
            return await self._client.trigger_async(request)
        except CallFailed as exc:
            raise InvocationError(exc.code, exc.message) from None

    def invoke_void(self, function_id: str, data: Any) -> None:
        pending = self._client.trigger({"function_id": function_id, "payload": data, "action": {"type": "void"}})
        if inspect.isawaitable(pending):  # called on a loop: the call has started; nothing to wait for
            asyncio.ensure_future(pending).add_done_callback(_quietly)

    def on_worker_left(self, callback: Callable[[str], None]) -> None:
        if not self._left:
            function_id = f"iii.modules.{self._module}::worker-left"
            loop = self._loop

            async def heard(event: Any) -> None:
                if isinstance(event, dict) and event.get("event") == "worker_disconnected":
                    worker_id = str(event.get("worker_id"))
                    await await_on(loop, _call_each(self._left, worker_id))

            self._client.register_function({"id": function_id, "metadata": {"internal": True}}, heard)
            self._client.register_trigger({"type": WORKERS_AVAILABLE, "function_id": function_id, "config": {}})
        self._left.append(callback)

    def call_on_module_loop(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """For :class:`_Provider`: run ``coro`` on the module's loop and await it from the SDK's."""
        return await_on(self._loop, coro)


class _Provider(TriggerHandler[Any]):
    """A module's trigger provider behind the SDK's trigger handler interface."""

    def __init__(self, host: WorkerHost, provider: TriggerProvider) -> None:
        self._host = host
        self._provider = provider

    async def register_trigger(self, config: TriggerConfig[Any]) -> None:
        problem = await self._host.call_on_module_loop(_activate(self._provider, _binding(config)))
        if problem is not None:
            raise ValueError(problem)  # the SDK refuses the binding with this text

    async def unregister_trigger(self, config: TriggerConfig[Any]) -> None:
        await self._host.call_on_module_loop(_deactivate(self._provider, _binding(config)))


def _binding(config: TriggerConfig[Any]) -> BindingInfo:
    settings = config.config if isinstance(config.config, dict) else {}
    return BindingInfo(
        binding_id=config.id,
        trigger_type="",
        function_id=config.function_id,
        config=settings,
        metadata=config.metadata,
    )


async def _activate(provider: TriggerProvider, binding: BindingInfo) -> str | None:
    return provider.activate(binding)


async def _deactivate(provider: TriggerProvider, binding: BindingInfo) -> None:
    provider.deactivate(binding)


async def _run(handler: Handler, data: Any, call: CallInfo) -> Any:
    outcome = handler(data, call)
    if inspect.isawaitable(outcome):
        outcome = await outcome
    return outcome


async def _call_each(callbacks: list[Callable[[str], None]], worker_id: str) -> None:
    for callback in list(callbacks):
        try:
            callback(worker_id)
        except Exception:
            log.exception("a worker-left callback failed")


def _quietly(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and (error := done.exception()) is not None:
        log.debug("a void call failed: %s", error)


async def run_module_worker(module: Module, client: III) -> None:
    """Serve ``module`` through ``client`` until SIGINT or SIGTERM, then stop it (its durable writes finish)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await module.start(WorkerHost(client, module.name, loop))
    log.info("module=%s serving as worker %s", module.name, client.options.worker_name)
    try:
        await stop.wait()
    finally:
        await module.stop()


__all__ = ["FunctionError", "WorkerHost", "run_module_worker"]
