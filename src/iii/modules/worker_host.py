"""A module as its own worker process: :class:`WorkerHost` does what a module may do over the worker protocol.

The same module code that runs inside the engine (:mod:`iii.modules.api`) runs here next to any engine, ours
or the reference: its functions are registered by an SDK client, its trigger types provided by it, its calls
made with ``trigger``, its channels are the SDK's (:class:`~iii.sdk.channels.ChannelWriter` and
:class:`~iii.sdk.channels.ChannelReader`, one socket per end kept), and workers leaving are heard through the
engine's ``engine::workers-available`` trigger type. ``iii worker state --url ws://...`` runs one
(:func:`run_module_worker`).

The module lives on the loop that runs :func:`run_module_worker` (its tasks, locks and stores belong to it);
the SDK serves calls on its own loop, and each call is handed to the module's loop and its answer back.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, Final

from iii.errors import ChannelBrokenError, ChannelError, FunctionError
from iii.errors import InvocationError as CallFailed
from iii.modules.api import (
    BindingInfo,
    CallInfo,
    FunctionKind,
    Handler,
    InvocationError,
    Module,
    TelemetrySink,
    TriggerProvider,
    WorkerGate,
    WorkerPort,
)
from iii.sdk.channels import Channel, ChannelReader, ChannelWriter
from iii.sdk.client import III
from iii.sdk.context import current_invocation
from iii.sdk.portal import await_on
from iii.sdk.triggers import TriggerConfig, TriggerHandler

log = logging.getLogger("iii.modules")

WORKERS_AVAILABLE = "engine::workers-available"
RELEASE_FUNCTION: Final = "engine::channels::release"


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

    def provide_function_kind(self, field: str, kind: FunctionKind) -> None:
        """Not over the worker protocol: a worker cannot take the registrations of other workers."""
        raise NotImplementedError(
            f"module {self._module} serves functions that workers register with {field!r}: it runs inside the "
            "engine only (a worker cannot take other workers' registrations)"
        )

    async def invoke(
        self,
        function_id: str,
        data: Any,
        *,
        timeout_s: float | None = None,
        metadata: Any = None,
        traceparent: str | None = None,
    ) -> Any:
        """The call goes with the SDK's own trace context: the SDK's trigger requests have no ``traceparent``."""
        request: dict[str, Any] = {"function_id": function_id, "payload": data}
        if timeout_s is not None:
            request["timeout_ms"] = max(1, int(timeout_s * 1000))
        if metadata is not None:
            request["metadata"] = metadata
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

    async def create_channel(self, buffer_frames: int = 64) -> _WorkerChannel:
        return _WorkerChannel(self, await self._client.create_channel_async(buffer_frames))

    async def serve_workers(self, host: str, port: int, gate: WorkerGate) -> WorkerPort:
        """Not over the worker protocol: a worker cannot let other workers in."""
        raise NotImplementedError(
            f"module {self._module} opens a port where it admits workers: it runs inside the engine only"
        )

    def receive_telemetry(self, sink: TelemetrySink) -> None:
        """Not over the worker protocol: a worker does not see other workers' telemetry."""
        raise NotImplementedError(
            f"module {self._module} receives the workers' telemetry: it runs inside the engine only"
        )

    def call_on_module_loop(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """For :class:`_Provider`: run ``coro`` on the module's loop and await it from the SDK's."""
        return await_on(self._loop, coro)


class _WorkerChannel:
    """A :class:`~iii.modules.api.ModuleChannel` made of the SDK's channel ends."""

    def __init__(self, host: WorkerHost, channel: Channel) -> None:
        self._host = host
        self._channel = channel
        self.writer_ref: Mapping[str, str] = channel.writer_ref.model_dump()
        self.reader_ref: Mapping[str, str] = channel.reader_ref.model_dump()

    def writer(self) -> _WorkerWriter:
        return _WorkerWriter(self._channel.writer, self._release_writer)

    def reader(self) -> _WorkerReader:
        return _WorkerReader(self._channel.reader)

    def release(self, reason: str) -> None:
        # The engine releases only ends that never connected, the kept one included if its socket never opened.
        self._host.invoke_void(RELEASE_FUNCTION, {"ends": [self.writer_ref, self.reader_ref], "reason": reason})

    def _release_writer(self, reason: str) -> None:
        """The kept writer was aborted before it ever connected: only the engine can tell its reader."""
        self._host.invoke_void(RELEASE_FUNCTION, {"ends": [self.writer_ref], "reason": reason})


class _WorkerWriter:
    """A :class:`~iii.modules.api.ModuleWriter` over the SDK's :class:`~iii.sdk.channels.ChannelWriter` (used on
    the module's loop: its writes return the awaitable that waits for room in its backlog)."""

    def __init__(self, writer: ChannelWriter, release: Callable[[str], None]) -> None:
        self._writer = writer
        self._release = release
        self._room: Awaitable[Any] | None = None
        self._over = False
        self.cut = False

    def write(self, data: bytes) -> None:
        if self._over:
            return
        try:
            self._room = self._writer.write(data)
        except ChannelError:  # the stream broke: its reader went away
            self._over = self.cut = True

    async def drain(self) -> None:
        room, self._room = self._room, None
        if room is not None:
            await room

    def close(self) -> None:
        if self._over:
            return
        self._over = True
        try:
            _quietly_done(self._writer.close())
        except ChannelError:
            self.cut = True

    def abort(self, reason: str) -> None:
        if self._over:
            return
        self._over = True
        _quietly_done(self._abort(reason))

    async def _abort(self, reason: str) -> None:
        # The SDK finishes an end this way when the invocation it was given to ends: what was written goes out,
        # then the reader sees 4001. An end that never connected cannot say so itself.
        if await self._writer._abandon(reason):
            self._release(reason)


class _WorkerReader:
    """A :class:`~iii.modules.api.ModuleReader` over the SDK's :class:`~iii.sdk.channels.ChannelReader`: its text
    messages are dispatched in stream order, before the data after them, so they are queued in that order."""

    _END: Final = object()

    def __init__(self, reader: ChannelReader) -> None:
        self._reader = reader
        self._items: collections.deque[Any] = collections.deque()
        reader.on_message(self._items.append)
        self._chunks: AsyncIterator[bytes] = aiter(reader)
        self._failure: ChannelBrokenError | None = None

    async def read(self) -> bytes | str | None:
        if not self._items and self._failure is None:
            try:
                chunk: Any = await anext(self._chunks)
            except StopAsyncIteration:
                chunk = self._END
            except ChannelBrokenError as exc:
                self._failure = exc
                chunk = None
            if chunk is not None:
                self._items.append(chunk)  # after the messages dispatched while it was awaited
        if self._items:
            item = self._items[0]
            if item is self._END:
                return None
            self._items.popleft()
            return item  # type: ignore[no-any-return]
        assert self._failure is not None
        raise self._failure

    def close(self, reason: str) -> None:
        if self._failure is None:
            self._failure = ChannelBrokenError(f"channel closed by its reader: {reason}", None, reason)
        self._items.clear()
        _quietly_done(self._reader.close())


def _quietly_done(pending: Any) -> None:
    """Let a fire-and-forget awaitable of the SDK finish on its own; its failure is only logged at debug level."""
    if inspect.isawaitable(pending):
        asyncio.ensure_future(pending).add_done_callback(_quietly)


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
    where = module.snapshot().get("url")  # a module that listens (http) says where
    log.info(
        "module=%s serving as worker %s%s", module.name, client.options.worker_name, f" on {where}" if where else ""
    )
    try:
        await stop.wait()
    finally:
        await module.stop()


__all__ = ["FunctionError", "WorkerHost", "run_module_worker"]
