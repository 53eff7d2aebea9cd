"""The worker client: one connection to the engine, functions it serves, calls it makes, channels it opens.

Everything runs on the SDK's loop (:class:`~iii.sdk.portal.Portal`); the public methods are thin dual-mode
shells (see :mod:`iii.sdk.portal`). ``async def`` handlers run on that loop; plain ``def`` handlers run in
a thread pool that grows as needed, so a sync handler may call ``trigger`` on another function of the same
worker, at any depth, without deadlock.

The connection (:mod:`iii.sdk.connection`) connects, reconnects and sends; this module registers and
replays what the worker offers (functions, trigger types, bindings), makes calls, serves invocations and
materializes channel refs. When the connection drops, calls waiting for an answer fail at once with
``invocation_stopped``; when it reopens, everything is registered again. How clients end with the program is
:mod:`iii.sdk.lifecycle`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import platform
import sys
import threading
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import msgspec

from iii._version import __version__
from iii.errors import EngineRefusedError, FunctionError, UsageError
from iii.protocol import errors
from iii.protocol.codec import decode_value
from iii.protocol.messages import (
    JSON_NULL,
    ErrorNotice,
    FunctionActivated,
    InvocationResult,
    InvokeFunction,
    Reattach,
    RegisterTrigger,
    RegisterTriggerType,
    RegistrationRejected,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
    is_null,
)
from iii.protocol.refs import is_channel_ref
from iii.sdk import lifecycle
from iii.sdk.calls import Calls, build_invocation
from iii.sdk.channels import Channel, ChannelReader, ChannelWriter, StreamChannelRef
from iii.sdk.connection import Connection, ConnectionState
from iii.sdk.context import InvocationContext, current_invocation
from iii.sdk.functions import FunctionRef, FunctionTable, RegisteredFunction
from iii.sdk.options import InitOptions, resolve_urls
from iii.sdk.payloads import describe_error, encode_payload
from iii.sdk.portal import Portal
from iii.sdk.serving import Server
from iii.sdk.telemetry.exporter import Exporter
from iii.sdk.telemetry.settings import TelemetrySettings
from iii.sdk.triggers import Trigger, TriggerConfig, TriggerHandler, TriggerTypeRef

log = logging.getLogger("iii.sdk")

_NON_FATAL_REJECTIONS: Final = frozenset((errors.FUNCTION_NAMESPACE_CONFLICT,))


class III:
    """A worker connected to an iii engine. Create it with :func:`register_worker`."""

    def __init__(self, url: str | Sequence[str] | None = None, options: InitOptions | None = None) -> None:
        self.options = options or InitOptions()
        self._headers = self.options.handshake_headers()
        self._portal = Portal()
        self._functions = FunctionTable()
        self._conn = Connection(
            resolve_urls(url),
            self.options,
            self._headers,
            on_open=self._replay,
            on_message=self._on_message,
            on_lost=self._on_connection_lost,
            on_failed=self._on_connection_failed,
        )
        self._calls = Calls(self._portal, self._conn, self.options)
        self._flush_timeout_s = self.options.flush_timeout_s
        """How long shutdown lets streams flush (shorter when the program is interrupted)."""
        self._keepalive: threading.Event | None = None
        self._trigger_types: dict[str, RegisterTriggerType] = {}
        self._trigger_handlers: dict[str, TriggerHandler[Any]] = {}
        self._bindings: dict[str, RegisterTrigger] = {}
        self._provided: dict[str, TriggerConfig[Any]] = {}
        """Bindings delivered to this worker as a provider, by binding id."""
        self._ends: weakref.WeakSet[ChannelReader | ChannelWriter] = weakref.WeakSet()
        settings = TelemetrySettings.of(self.options)
        self.telemetry = (
            Exporter(settings, self._portal.loop, lambda: self._conn.address, self._headers, self._conn.terms)
            if settings.enabled
            else None
        )
        """This worker's spans and log records on their way to the engine (None when ``otel`` disables them)."""
        self._server = Server(
            self._portal, self._functions, self._conn.send, self._release_ends, self._materialize, self.telemetry
        )
        self._runner = self._portal.submit(self._conn.run())
        lifecycle.track(self)

    # --- lifecycle -------------------------------------------------------------------------------------

    @property
    def worker_id(self) -> str | None:
        """The id the engine gave this worker's current connection."""
        return self._conn.worker_id

    @property
    def address(self) -> str:
        """The address of the engine this worker uses now (the first of several that answers)."""
        return self._conn.address

    def get_address(self) -> str:
        return self.address

    def get_connection_state(self) -> ConnectionState:
        """``connecting``, ``connected``, ``reconnecting``, ``failed`` or ``disconnected`` (after shutdown)."""
        return self._conn.state

    def add_connection_state_listener(self, listener: Callable[[str], Any]) -> Callable[[], None]:
        """Call ``listener(state)`` now and on every change (on the SDK's thread); returns an unsubscribe."""
        return self._conn.add_state_listener(listener)

    def wait_until_connected(self, timeout_s: float | None = None) -> None:
        """Block until the first connection is up; raises the reason if it cannot be made."""
        self._conn.wait_until_open(self.options.connect_timeout_s if timeout_s is None else timeout_s)

    _wait_until_connected = wait_until_connected  # the official SDK's spelling, used by its test fixtures

    def shutdown(self) -> None:
        """Stop serving: fail calls still waiting (``invocation_stopped``), flush streams, close the socket, stop
        the SDK thread. Idempotent; also after the client failed for good (a refused token), so its threads end."""
        if self._portal.stopped:
            return
        if self._portal.in_loop_thread:
            raise UsageError("shutdown() cannot run on the SDK's loop; use 'await shutdown_async()'")
        try:
            self._portal.call(self._shutdown(), timeout_s=self._flush_timeout_s + 15)
        finally:
            self._portal.stop()
            self._server.shutdown()
            if self._keepalive is not None:
                self._keepalive.set()

    async def shutdown_async(self) -> None:
        """Like :meth:`shutdown`, from async code."""
        if asyncio.get_running_loop() is self._portal.loop:
            await self._shutdown()
            self._portal.stop()
        else:
            await asyncio.to_thread(self.shutdown)

    def __enter__(self) -> III:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    async def _shutdown(self) -> None:
        self._conn.stopping = True
        self._conn.set_state(ConnectionState.DISCONNECTED)
        self._calls.fail_all(errors.INVOCATION_STOPPED, "the worker is shutting down")
        running = list(self._server.tasks)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=5)
        await self._flush_streams()
        if self.telemetry is not None:
            await self.telemetry.close()
        await self._conn.close()
        self._runner.cancel()

    async def _flush_streams(self) -> None:
        """Let writes and closes already made reach the engine (``flush_timeout_s`` at most); report the rest.

        A script that writes, closes and ends must not lose its stream: this runs at :meth:`shutdown` and
        when the interpreter exits. A stream that could not be delivered in time is named on stderr.
        """
        writers = [end for end in list(self._ends) if isinstance(end, ChannelWriter)]
        settling = {asyncio.ensure_future(end._settled()): end for end in writers}
        if not settling:
            return
        _, late = await asyncio.wait(settling, timeout=self._flush_timeout_s)
        for future in late:
            end = settling[future]
            print(
                f"iii: channel {end.ref.channel_id}: {end._unsent} bytes and the end of the stream were not "
                f"delivered within {self._flush_timeout_s} s; its reader sees a broken stream",
                file=sys.stderr,
            )

    @property
    def _serving(self) -> bool:
        """Whether this client holds its process alive (it serves functions or trigger types)."""
        return self._keepalive is not None and not self._keepalive.is_set()

    def _stop_now(self, flush_timeout_s: float | None) -> None:
        """Shut down as the program ends (see :mod:`iii.sdk.lifecycle`); ``flush_timeout_s`` None: the option's."""
        if flush_timeout_s is not None:
            self._flush_timeout_s = min(flush_timeout_s, self._flush_timeout_s)
        self.shutdown()

    # --- the connection's events ----------------------------------------------------------------------

    def _replay(self) -> None:
        """A connection is open: reattach, then register again everything this worker has registered."""
        conn = self._conn
        if conn.previous_worker_id is not None:
            conn.send(Reattach(previous_worker_id=conn.previous_worker_id, reattach_token=conn.previous_reattach_token))
        for trigger_type in list(self._trigger_types.values()):  # other threads may register meanwhile
            conn.send(trigger_type)
        for function in self._functions:
            self._functions.set_status(function, "registering" if conn.terms.answers_registrations else "active")
            conn.send(function.registration())
        for binding in list(self._bindings.values()):
            conn.send(binding)
        self._send_void("engine::workers::register", self._worker_metadata())

    def _on_connection_lost(self) -> None:
        # The engine fails the calls it was routing for this connection; say so now instead of at the timeout.
        self._calls.fail_all(errors.INVOCATION_STOPPED, "the connection to the engine was lost")

    def _on_connection_failed(self, error: BaseException) -> None:
        self._calls.fail_all(errors.INVOCATION_STOPPED, str(error))
        if self._keepalive is not None:
            self._keepalive.set()  # a worker that can never serve does not hold its process

    def _worker_metadata(self) -> dict[str, Any]:
        return {
            "name": self.options.resolved_name(),
            "description": self.options.worker_description,
            "runtime": "python",
            "version": __version__,
            "os": platform.system().lower(),
            "pid": os.getpid(),
            "isolation": None,
            "telemetry": {"language": "python", "framework": "iii-py"},
        }

    # --- sending ---------------------------------------------------------------------------------------

    def _send_void(self, function_id: str, payload: Any) -> None:
        request = {"function_id": function_id, "payload": payload, "action": {"type": "void"}}
        self._conn.send(build_invocation(request, self.options.invocation_timeout_ms)[0])

    # --- functions -------------------------------------------------------------------------------------

    def register_function(
        self,
        function: str | Mapping[str, Any],
        handler: Callable[..., Any] | Mapping[str, Any],
        *,
        description: str | None = None,
        metadata: Any = None,
        request_format: Any = None,
        response_format: Any = None,
        **_ignored: Any,
    ) -> FunctionRef:
        """Serve ``handler`` under an id (``"id"`` or ``{"id": ..., "description": ...}``).

        ``handler(data)`` may be ``def`` or ``async def``; it also receives ``metadata`` if it declares a
        parameter of that name. What it returns is the result; what it raises becomes an
        ``invocation_failed`` error with the traceback text. Registering the same id twice raises
        :class:`UsageError`, and so does registering after :meth:`shutdown`.

        Instead of a handler, an ``invocation`` config (``{"url", "method"?, "timeout_ms"?, "headers"?, "auth"?}``,
        the official SDKs' ``HttpInvocationConfig``; an object with ``model_dump`` is taken too) registers a
        function the engine calls over HTTP: ``auth`` names the engine's environment variables that hold the
        secrets (``{"type": "bearer", "token_key": "HOOK_TOKEN"}``), never the secrets.
        """
        self._portal.ensure_open()
        if isinstance(function, Mapping):
            spec = dict(function)
            function_id = spec.get("id")
            description = description if description is not None else spec.get("description")
            metadata = metadata if metadata is not None else spec.get("metadata")
            request_format = request_format if request_format is not None else spec.get("request_format")
            response_format = response_format if response_format is not None else spec.get("response_format")
        else:
            function_id = function
        if not isinstance(function_id, str) or not function_id:
            raise UsageError("a function needs a non-empty string id")
        invocation = _invocation_config(handler)
        if invocation is not None:
            handler = _served_by_the_engine(function_id)
        if not callable(handler):
            raise UsageError(f"the handler of {function_id} is not callable (nor an invocation config)")
        if function_id in self._functions:
            raise UsageError(f"function {function_id} is already registered by this worker")
        entry = RegisteredFunction.of(
            function_id,
            handler,
            description=description,
            metadata=metadata,
            request_format=request_format,
            response_format=response_format,
            invocation=invocation,
        )
        if not self._conn.terms.answers_registrations:
            entry.status = "active"
        self._functions.add(entry)
        self._portal.call_soon(self._conn.send, entry.registration())
        self._keep_process_alive()
        return FunctionRef(function_id, self._functions, self.unregister_function)

    def unregister_function(self, function_id: str) -> None:
        """Stop serving ``function_id`` (fire-and-forget; nothing to do after :meth:`shutdown`)."""
        if self._functions.remove(function_id) and not self._portal.stopped:
            self._portal.call_soon(self._conn.send, UnregisterFunction(id=function_id))

    # --- triggers --------------------------------------------------------------------------------------

    def register_trigger(self, trigger: Mapping[str, Any]) -> Trigger:
        """Bind a function to a trigger type: ``{"type", "function_id", "config"?, "metadata"?}``.

        The engine hands the binding to the type's provider (now, or when one registers). Fire-and-forget;
        a provider's refusal is logged. Replayed after a reconnect.
        """
        self._portal.ensure_open()
        trigger_type = trigger.get("type") or trigger.get("trigger_type")
        function_id = trigger.get("function_id")
        if not isinstance(trigger_type, str) or not trigger_type or not isinstance(function_id, str) or not function_id:
            raise UsageError("register_trigger needs string 'type' and 'function_id'")
        config, metadata = trigger.get("config"), trigger.get("metadata")
        message = RegisterTrigger(
            id=str(uuid.uuid4()),
            trigger_type=trigger_type,
            function_id=function_id,
            config=encode_payload(config) if config is not None else JSON_NULL,
            metadata=encode_payload(metadata) if metadata is not None else JSON_NULL,
        )
        self._bindings[message.id] = message
        self._portal.call_soon(self._conn.send, message)
        return Trigger(message.id, trigger_type, function_id, self.unregister_trigger)

    def unregister_trigger(self, trigger_id: str) -> None:
        """Remove a binding made by :meth:`register_trigger` (fire-and-forget; nothing to do after shutdown)."""
        message = self._bindings.pop(trigger_id, None)
        if message is not None and not self._portal.stopped:  # after shutdown, the engine dropped it already
            unbind = UnregisterTrigger(id=trigger_id, trigger_type=message.trigger_type)
            self._portal.call_soon(self._conn.send, unbind)

    def register_trigger_type(self, trigger_type: Mapping[str, Any], handler: TriggerHandler[Any]) -> TriggerTypeRef:
        """Provide a trigger type: ``{"id", "description"?}``; ``handler`` receives its bindings."""
        self._portal.ensure_open()
        type_id = trigger_type.get("id")
        if not isinstance(type_id, str) or not type_id:
            raise UsageError("register_trigger_type needs a non-empty string 'id'")
        message = RegisterTriggerType(id=type_id, description=str(trigger_type.get("description") or ""))
        self._trigger_types[type_id] = message
        self._trigger_handlers[type_id] = handler
        self._portal.call_soon(self._conn.send, message)
        self._keep_process_alive()
        return TriggerTypeRef(type_id, self.unregister_trigger_type)

    def unregister_trigger_type(self, type_id: str | Mapping[str, Any]) -> None:
        """Stop providing a trigger type (fire-and-forget; nothing to do after shutdown)."""
        key = type_id if isinstance(type_id, str) else str(type_id.get("id"))
        if self._trigger_types.pop(key, None) is not None:
            self._trigger_handlers.pop(key, None)
            if not self._portal.stopped:
                self._portal.call_soon(self._conn.send, UnregisterTriggerType(id=key))

    def _on_binding(self, message: RegisterTrigger) -> None:
        handler = self._trigger_handlers.get(message.trigger_type)
        if handler is None:
            error = {"code": "trigger_type_not_found", "message": f"{message.trigger_type} is not provided here"}
            self._send_binding_result(message, error)
            return
        try:
            config = TriggerConfig(
                message.id, message.function_id, decode_value(message.config), decode_value(message.metadata)
            )
        except (msgspec.DecodeError, RecursionError) as exc:
            self._send_binding_result(message, {"code": "trigger_registration_failed", "message": str(exc)})
            return
        self._provided[message.id] = config
        self._server.track(
            self._portal.loop.create_task(self._call_trigger_handler(handler.register_trigger, config, message))
        )

    def _on_unbinding(self, message: UnregisterTrigger) -> None:
        handler = self._trigger_handlers.get(message.trigger_type or "")
        config = self._provided.pop(message.id, None) or TriggerConfig(message.id, "", None)
        if handler is not None:
            self._server.track(
                self._portal.loop.create_task(self._call_trigger_handler(handler.unregister_trigger, config, None))
            )

    async def _call_trigger_handler(
        self, method: Callable[[TriggerConfig[Any]], Any], config: TriggerConfig[Any], reply_to: RegisterTrigger | None
    ) -> None:
        error = None
        try:
            if inspect.iscoroutinefunction(method):
                await method(config)
            else:
                await self._server.run_sync(method, config)
        except Exception as exc:
            log.warning("trigger handler %s failed for binding %s: %s", method.__name__, config.id, exc)
            error = {"code": "trigger_registration_failed", "message": str(exc) or type(exc).__name__}
        if reply_to is not None:
            self._send_binding_result(reply_to, error)

    def _send_binding_result(self, binding: RegisterTrigger, error: Any) -> None:
        self._conn.send(
            TriggerRegistrationResult(
                id=binding.id,
                trigger_type=binding.trigger_type,
                function_id=binding.function_id,
                error=encode_payload(error) if error is not None else JSON_NULL,
            )
        )

    def _keep_process_alive(self) -> None:
        """A worker that serves functions keeps its process alive until shutdown, like the official SDK."""
        if self._keepalive is None:
            self._keepalive = threading.Event()
            lifecycle.keep_process_alive(self._keepalive)

    # --- calls -----------------------------------------------------------------------------------------

    def trigger(self, request: Mapping[str, Any]) -> Any:
        """Call a function: ``{"function_id", "payload"?, "action"?, "timeout_ms"?, "metadata"?}``.

        Returns the result (blocks in sync code; awaitable in async code). Raises :class:`InvocationError`
        with the engine's or the handler's code, or ``TIMEOUT``. With ``action`` void, returns ``None`` as
        soon as the call is sent. After :meth:`shutdown`, raises :class:`UsageError`.
        """
        return self._calls.trigger(request)

    async def trigger_async(self, request: Mapping[str, Any]) -> Any:
        """Like :meth:`trigger`, always awaitable."""
        return await self._calls.trigger_async(request)

    def current_invocation(self) -> InvocationContext | None:
        """The invocation the calling code runs in (function, invocation id, caller, metadata), or ``None``
        outside every handler. The same as :func:`iii.current_invocation`, as in the official SDK."""
        return current_invocation()

    # --- channels --------------------------------------------------------------------------------------

    def create_channel(self, buffer_size: int | None = 64) -> Any:
        """A new channel (writer, reader and their refs). Blocks in sync code; awaitable in async code."""
        created = self._calls.trigger(_create_request(buffer_size))
        if inspect.isawaitable(created):
            return self._channel_when(created)
        return self._channel_of(created)

    async def create_channel_async(self, buffer_size: int | None = 64) -> Channel:
        return self._channel_of(await self._calls.trigger_async(_create_request(buffer_size)))

    async def _channel_when(self, created: Awaitable[Any]) -> Channel:
        return self._channel_of(await created)

    def _channel_of(self, refs: Mapping[str, Any]) -> Channel:
        writer_ref = StreamChannelRef.model_validate(refs["writer"])
        reader_ref = StreamChannelRef.model_validate(refs["reader"])
        return Channel(
            writer=self.writer(writer_ref), reader=self.reader(reader_ref), writer_ref=writer_ref, reader_ref=reader_ref
        )

    def reader(self, ref: StreamChannelRef | Mapping[str, Any]) -> ChannelReader:
        """A reader for a ref received by other means than a payload."""
        self._portal.ensure_open()
        end = ChannelReader(self.address, ref, self._portal, self._headers, self._conn.terms)
        self._ends.add(end)
        return end

    def writer(self, ref: StreamChannelRef | Mapping[str, Any]) -> ChannelWriter:
        """A writer for a ref received by other means than a payload."""
        self._portal.ensure_open()
        end = ChannelWriter(self.address, ref, self._portal, self._headers, self._conn.terms)
        self._ends.add(end)
        return end

    def _materialize(self, value: Any, made: list[ChannelReader | ChannelWriter]) -> Any:
        """Replace every channel ref in ``value`` (dicts, lists, tuples, nested) by a live end, listed in ``made``."""
        if isinstance(value, dict):
            if is_channel_ref(value):
                end = self.reader(value) if value["direction"] == "read" else self.writer(value)
                made.append(end)
                return end
            return {key: self._materialize(item, made) for key, item in value.items()}
        if isinstance(value, list):
            return [self._materialize(item, made) for item in value]
        if isinstance(value, tuple):
            return tuple(self._materialize(item, made) for item in value)
        return value

    # --- incoming messages -----------------------------------------------------------------------------

    def _on_message(self, message: Any) -> None:
        if isinstance(message, InvocationResult):
            self._calls.on_result(message)
        elif isinstance(message, InvokeFunction):
            self._server.on_invocation(message)
        elif isinstance(message, RegistrationRejected):
            self._on_rejected(message)
        elif isinstance(message, FunctionActivated):
            self._functions.activated(message.function_id)
        elif isinstance(message, RegisterTrigger):
            self._on_binding(message)
        elif isinstance(message, UnregisterTrigger):
            self._on_unbinding(message)
        elif isinstance(message, TriggerRegistrationResult) and not is_null(message.error):
            refusal = describe_error(message.error)
            log.warning(
                "the engine or the provider of %s refused binding %s: %s", message.trigger_type, message.id, refusal
            )
        elif isinstance(message, ErrorNotice):
            if message.function_id is not None:
                self._functions.rejected(message.function_id, message.error.code, message.error.message)
            else:
                log.warning("the engine refused a message: %s: %s", message.error.code, message.error.message)

    def _on_rejected(self, message: RegistrationRejected) -> None:
        if message.code not in _NON_FATAL_REJECTIONS:
            self._conn.fail_for_good(EngineRefusedError(f"the engine rejected this worker: {message.code}"))
            return
        self._functions.refused(message.function_id or "", message.owner_worker_id)

    def _release_ends(self, refs: list[dict[str, Any]], reason: str) -> None:
        """Ask the engine to finish channel ends that never connected (their peers are told at once)."""
        self._send_void("engine::channels::release", {"ends": refs, "reason": reason})


def _invocation_config(handler: Any) -> dict[str, Any] | None:
    """The ``invocation`` config ``handler`` is, if it is one (a mapping, or a pydantic model such as the official
    SDK's ``HttpInvocationConfig``); None for anything else."""
    if isinstance(handler, Mapping):
        return dict(handler)
    dump = getattr(handler, "model_dump", None)
    if not callable(handler) and callable(dump):
        dumped = dump(exclude_none=True)
        return dict(dumped) if isinstance(dumped, Mapping) else None
    return None


def _served_by_the_engine(function_id: str) -> Callable[[Any], Any]:
    """The handler of a function the engine calls over HTTP: an engine that routes its calls here anyway (one
    that does not know HTTP-invoked functions) gets the official SDK's answer."""

    def not_here(data: Any) -> Any:
        raise FunctionError("function_not_invokable", f"{function_id} is called by the engine over HTTP, not here")

    return not_here


def _create_request(buffer_size: int | None) -> dict[str, Any]:
    return {"function_id": "engine::channels::create", "payload": {"buffer_size": buffer_size}}


def register_worker(url: str | Sequence[str] | None = None, options: InitOptions | None = None) -> III:
    """Connect a worker to the engine at ``url`` (else ``III_URL``, else ``ws://127.0.0.1:49134``).

    Several addresses (a list, or one string separated by commas) name engines of one cluster, or a standby: the
    worker uses the first that answers, and when its engine goes it moves to the next one at once, registering
    its functions, trigger types and triggers there again.

    Blocks until connected. Raises :class:`EngineUnavailableError` if the engine cannot be reached within
    ``options.connect_timeout_s`` and :class:`EngineRefusedError` if it refuses the worker.
    """
    client = III(url, options)
    try:
        client.wait_until_connected()
    except BaseException:
        client.shutdown()
        raise
    return client
