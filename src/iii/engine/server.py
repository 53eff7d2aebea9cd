"""The engine: one listener, the routes behind it, and what each worker message does.

Routes (all WebSocket upgrades on one port):

* ``/``: the worker control socket (:mod:`iii.engine.worker_socket`);
* ``/ws/channels/{channel_id}?key=…&dir=read|write``: one end of a channel (:mod:`iii.engine.sockets`);
* ``/otel``: telemetry from the official SDKs, read and discarded;
* ``GET /metrics`` (plain HTTP): Prometheus metrics (:mod:`iii.engine.metrics`);
* ``GET /console`` and ``/console/state`` (plain HTTP): the live console page (:mod:`iii.engine.console`).

HTTP triggers are served on a port of their own (:mod:`iii.engine.http_trigger`).

Message handling is synchronous and runs in picows' frame callbacks: an invocation is decoded, routed
and written to its host without a task switch. Time-based work (call deadlines, channel expiry, pings of
silent workers, handing freed memory back) runs in one housekeeping task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
from picows import (
    WSListener,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from iii.engine import console
from iii.engine.availability import Availability
from iii.engine.builtins import Builtins
from iii.engine.channels import ChannelManager, KeyCheck, Role
from iii.engine.config import EngineConfig
from iii.engine.http_trigger import TRIGGER_TYPE as HTTP_TRIGGER_TYPE
from iii.engine.http_trigger import HttpTriggers
from iii.engine.memory import release_free_memory
from iii.engine.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from iii.engine.metrics import OK, EngineMetrics
from iii.engine.peers import Caller, Host
from iii.engine.registry import (
    BuiltinFailure,
    BuiltinInputError,
    BuiltinLimitError,
    FunctionEntry,
    FunctionRegistry,
)
from iii.engine.router import InvocationRouter, PendingCall
from iii.engine.sockets import ChannelSocket, DrainSocket, RefusingSocket
from iii.engine.triggers import TriggerRegistry
from iii.engine.worker_socket import Outbox, WorkerConnection, read_limit
from iii.protocol import close_codes, errors
from iii.protocol.codec import MalformedMessage, decode_value, detached, encode, encode_value, with_caller_worker_id
from iii.protocol.messages import (
    FUNCTION_STATUS_FEATURE,
    JSON_NULL,
    Delivery,
    FunctionActivated,
    InboundMessage,
    InvocationResult,
    InvokeFunction,
    Message,
    Ping,
    Pong,
    Reattach,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    RegistrationRejected,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
    WorkerRegistered,
    is_null,
)
from iii.protocol.refs import CHANNEL_PATH_PREFIX

log = logging.getLogger("iii.engine")

_HOUSEKEEPING_TICK_S: Final = 0.05
_READ_BUFFER_INIT_BYTES: Final = 4096
_HANG_UP_CHECK_S: Final = 0.5
"""How often held-back channel writers are checked for a hang-up (one getsockopt each)."""


def error_raw(code: str, message: str) -> msgspec.Raw:
    """An ``invocationresult.error`` value."""
    return msgspec.Raw(encode_value({"code": code, "message": message}))


def _error_code(error: msgspec.Raw) -> str:
    """The ``code`` of an ``invocationresult.error`` (for metrics; ``invocation_failed`` if it has none)."""
    try:
        value = decode_value(error)
    except (msgspec.DecodeError, RecursionError):
        value = None
    code = value.get("code") if isinstance(value, dict) else None
    return code if isinstance(code, str) and code else errors.INVOCATION_FAILED


def _http_error(status: int, text: str) -> WSUpgradeResponseWithListener:
    return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(status, text.encode()), None)


class Engine:
    """An iii engine bound to one host and port. Use :meth:`start` and :meth:`stop`, or ``async with``."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.functions = FunctionRegistry()
        self.router = InvocationRouter()
        self.channels = ChannelManager(
            default_buffer_frames=self.config.channel_default_buffer_frames,
            max_buffer_frames=self.config.channel_max_buffer_frames,
            buffer_bytes=self.config.channel_buffer_bytes,
            ttl_s=self.config.channel_ttl_s,
        )
        self.workers: dict[str, WorkerConnection] = {}
        self.triggers = TriggerRegistry()
        self.outbox = Outbox()
        self.metrics = EngineMetrics(self)
        self.http = HttpTriggers(self) if self.config.http_port >= 0 else None
        if self.http is not None:
            self.triggers.add_builtin(HTTP_TRIGGER_TYPE, self.http, "HTTP requests to a route (api_path, http_method)")
        self.builtins = Builtins(self)
        self.builtins.install()
        self.availability = Availability(self)
        self._server: asyncio.Server | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._sockets: set[WSTransport] = set()
        self._stopping = False
        self._handlers: dict[type[Any], Callable[[WorkerConnection, Any], None]] = {
            InvokeFunction: self._on_invoke,
            InvocationResult: self._on_result,
            RegisterFunction: self._on_register_function,
            UnregisterFunction: self._on_unregister_function,
            Reattach: self._on_reattach,
            Ping: self._on_ping,
            RegisterTriggerType: self._on_register_trigger_type,
            UnregisterTriggerType: self._on_unregister_trigger_type,
            RegisterTrigger: self._on_register_trigger,
            UnregisterTrigger: self._on_unregister_trigger,
            TriggerRegistrationResult: self._on_trigger_registration_result,
        }

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving; returns once the port is open."""
        try:
            self._server = await ws_create_server(
                self._route,
                self.config.host,
                self.config.port,
                websocket_handshake_timeout=self.config.handshake_timeout_s,
                max_frame_size=read_limit(self.config.max_message_bytes),
                # Idle sockets dominate memory with many connections; picows grows the buffer when needed.
                read_buffer_init_size=_READ_BUFFER_INIT_BYTES,
                logger_name="iii.engine.ws",
            )
        except OSError as exc:
            where = f"{self.config.host}:{self.config.port}"
            raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from None
        if self.http is not None:
            try:
                await self.http.start()
            except OSError as exc:
                self._server.close()
                where = f"{self.config.http_host}:{self.config.http_port}"
                raise OSError(
                    exc.errno,
                    f"cannot serve HTTP triggers on {where}: {exc.strerror or exc} (set --http-port, -1 for none)",
                ) from None
        self._housekeeping = asyncio.get_running_loop().create_task(self._run_housekeeping())
        log.info("iii engine listening on %s", self.url)
        if self.http is not None:
            log.info("HTTP triggers on %s", self.http.url)

    @property
    def port(self) -> int:
        assert self._server is not None, "engine not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    async def stop(self) -> None:
        """Shut down: stop accepting, fail pending calls with ``invocation_stopped``, close every socket.

        Callers are told before their sockets close. Idempotent.
        """
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()
        if self.http is not None:
            await self.http.stop(self.config.shutdown_grace_s)
        self.availability.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        stopped = self.router.take_all()
        self._fail_calls(stopped, errors.INVOCATION_STOPPED, "Invocation stopped: the engine is shutting down")
        self.channels.abort_all(close_codes.SERVICE_RESTART, "the engine is shutting down")
        for worker in list(self.workers.values()):
            worker.close(1001, "the engine is shutting down")
        pending = [asyncio.ensure_future(t.wait_disconnected()) for t in list(self._sockets)]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.config.shutdown_grace_s)
            for future in late:
                future.cancel()
            for transport in list(self._sockets):
                transport.disconnect(graceful=False)
        log.info("iii engine stopped (%d calls stopped)", len(stopped))

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def track(self, transport: WSTransport, connected: bool) -> None:
        """Keep the set of open sockets that shutdown must close."""
        if connected:
            self._sockets.add(transport)
        else:
            self._sockets.discard(transport)

    async def _run_housekeeping(self) -> None:
        interval = self.config.worker_ping_interval_s
        check_every = min(max(interval / 4, _HOUSEKEEPING_TICK_S), 1.0)
        next_check = time.monotonic() + check_every
        trim_every = self.config.memory_trim_interval_s
        next_trim = time.monotonic() + trim_every
        next_hang_up_check = time.monotonic() + _HANG_UP_CHECK_S
        while True:
            await asyncio.sleep(_HOUSEKEEPING_TICK_S)
            try:
                expired = self.router.take_expired()
                if expired:
                    self._fail_calls(expired, errors.TIMEOUT, "invocation timed out in the engine")
                self.channels.expire_due()
                now = time.monotonic()
                if interval > 0 and now >= next_check:
                    next_check = now + check_every
                    self._drop_silent_workers(now)
                if now >= next_hang_up_check:
                    next_hang_up_check = now + _HANG_UP_CHECK_S
                    for channel in self.channels.read_departed_writers():
                        log.info("channel=%s writer hung up while held back: reading what it left", channel.channel_id)
                if trim_every > 0 and now >= next_trim:
                    next_trim = now + trim_every
                    release_free_memory()
            except Exception:
                log.exception("housekeeping failed")

    def _drop_silent_workers(self, now: float) -> None:
        """Ping quiet workers; drop those that did not answer in time (their callers are told at once)."""
        interval, timeout = self.config.worker_ping_interval_s, self.config.worker_ping_timeout_s
        for worker in list(self.workers.values()):
            if not worker.check_alive(now, interval, timeout):
                log.warning(
                    "worker=%s name=%s silent after a ping for %.1fs: dropped", worker.worker_id, worker.name, timeout
                )
                if worker.transport is not None:
                    worker.transport.disconnect(graceful=False)

    # --- routing of new sockets ------------------------------------------------------------------------

    def _route(self, request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener | None:
        """Choose the listener for an upgrade request, or refuse it with an HTTP status."""
        if self._stopping:
            return _http_error(503, "the engine is shutting down")
        target = urlsplit(request.path.decode("latin-1"))
        path = target.path
        if path.startswith(CHANNEL_PATH_PREFIX):
            # A channel end's key is itself the capability (the Node, Rust and Go SDKs send no headers here).
            return self._route_channel(unquote(path[len(CHANNEL_PATH_PREFIX) :]), target.query)
        authorized = self._authorized(request, target.query)
        if path == "/" or path == "":
            if not authorized:
                log.warning("refused a worker: missing or wrong bearer token")
                return RefusingSocket(
                    close_codes.POLICY_VIOLATION, "unauthorized: missing or wrong bearer token", self.track
                )
            return WorkerConnection(self, self.config.max_message_bytes)
        if path == "/otel":
            # The official Node SDK's telemetry socket carries neither a header nor a query: refused, it would
            # reconnect forever. Telemetry is read and dropped, so accepting it gives nothing away.
            return DrainSocket(self.track)
        if path in console.PAGE_PATHS or path == console.STATE_PATH:
            return self._console(path, authorized)
        if not authorized:
            return _http_error(401, "unauthorized: missing or wrong bearer token")
        if path == "/metrics":
            body = self.metrics.render()
            response = WSUpgradeResponse.create_ok_response(body, {"Content-Type": METRICS_CONTENT_TYPE})
            return WSUpgradeResponseWithListener(response, None)
        return None  # picows answers 404

    def _console(self, path: str, authorized: bool) -> WSUpgradeResponseWithListener:
        if not authorized:
            return _http_error(401, "unauthorized: open the console with ?token=<the engine's token>")
        if path == console.STATE_PATH:
            body = encode_value(console.state(self, self.builtins))
            headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
        else:
            body = console.page()
            headers = {"Content-Type": "text/html; charset=utf-8"}
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_ok_response(body, headers), None)

    def _authorized(self, request: WSUpgradeRequest, query: str) -> bool:
        """Whether the request carries the engine's token (always true without one).

        The token is taken from ``Authorization: Bearer <token>``, or from ``?token=`` where a client
        cannot send a header (a browser's WebSocket, a Prometheus scrape URL). Compared in constant time.
        """
        token = self.config.token
        if token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(presented.strip().encode(), token.encode()):
            return True
        in_query = parse_qs(query).get("token", [""])[0]
        return secrets.compare_digest(in_query.encode(), token.encode())

    def _route_channel(self, channel_id: str, query: str) -> WSListener | WSUpgradeResponseWithListener:
        params = parse_qs(query)
        keys, dirs = params.get("key", []), params.get("dir", [])
        if len(keys) != 1 or len(dirs) != 1 or dirs[0] not in ("read", "write"):
            return _http_error(400, "channel sockets need one 'key' and one 'dir' of read or write")
        role = Role(dirs[0])
        outcome, channel = self.channels.check(channel_id, keys[0], role)
        if outcome is KeyCheck.NOT_FOUND or channel is None:
            return _http_error(404, "Channel not found")
        if outcome is KeyCheck.WRONG_DIRECTION:
            other = "read" if role is Role.WRITER else "write"
            return _http_error(403, f"this key opens the {other} end of the channel, not the {role.value} end")
        if outcome is KeyCheck.TAKEN:
            log.warning("channel=%s refused a second %s end", channel_id, role.value)
            reason = f"the {role.value} end of this channel is already taken"
            return RefusingSocket(close_codes.POLICY_VIOLATION, reason, self.track)
        self.channels.take(channel, role)
        return ChannelSocket(channel, role, self.config.max_message_bytes, self.track)

    # --- worker sockets --------------------------------------------------------------------------------

    def on_worker_connected(self, worker: WorkerConnection) -> None:
        self.workers[worker.worker_id] = worker
        worker.send_message(
            encode(
                WorkerRegistered(
                    worker_id=worker.worker_id,
                    reattach_token=worker.reattach_token,
                    features=[close_codes.STRICT_CLOSE_FEATURE, FUNCTION_STATUS_FEATURE],
                    max_message_bytes=self.config.max_message_bytes,
                )
            )
        )
        log.info("worker=%s connected from %s", worker.worker_id, worker.peer_address)
        self.availability.worker_changed("worker_connected", worker.worker_id)

    def on_worker_disconnected(self, worker: WorkerConnection) -> None:
        """Clean up after a worker: its functions, the calls it hosts (failed now) and makes, its channels."""
        self.workers.pop(worker.worker_id, None)
        removed, promoted = self.functions.remove_owner(worker)
        for successor in promoted:
            self._activate(successor, f"worker {worker.worker_id} left")
        stopped = self.router.take_target(worker)
        who = worker.name or worker.worker_id
        self._fail_calls(stopped, errors.INVOCATION_STOPPED, f"Invocation stopped: worker {who} disconnected")
        abandoned = self.router.drop_caller(worker)
        orphans = self.channels.forget_unconnected_of(worker.worker_id)
        self._send_all(self.triggers.remove_worker(worker))
        log.info(
            "worker=%s name=%s disconnected functions=%d stopped_calls=%d abandoned_calls=%d orphan_channels=%d",
            worker.worker_id,
            worker.name,
            len(removed),
            len(stopped),
            abandoned,
            orphans,
        )
        self.availability.worker_changed("worker_disconnected", worker.worker_id)

    def on_worker_message(self, worker: WorkerConnection, message: InboundMessage) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            log.debug("worker=%s %s not handled by this engine", worker.worker_id, type(message).__name__)
            return
        handler(worker, message)

    def on_malformed_message(self, worker: WorkerConnection, problem: MalformedMessage) -> None:
        """Answer a message that could not be used; the caller of a broken call gets an error result."""
        log.warning("worker=%s sent a malformed message: %s", worker.worker_id, problem.reason)
        if problem.invocation_id is not None:
            self._refuse_call(worker, problem.invocation_id, "", errors.INVALID_MESSAGE, problem.reason)
        else:
            self.send_error_notice(worker, errors.INVALID_MESSAGE, problem.reason)

    def on_oversized_message(
        self, worker: WorkerConnection, address: tuple[str | None, str | None, str | None], size: int
    ) -> None:
        """A message over ``--max-message-bytes`` was read and will not be acted on: say so to whom it concerns.

        An oversized call is refused to its caller; an oversized result fails the call it answers (its caller
        gets the error, its target a notice). Anything else gets a notice. Nobody is disconnected.
        """
        message_type, invocation_id, function_id = address
        limit = f"the engine's limit of {self.config.max_message_bytes} bytes (--max-message-bytes)"
        what = f"'{message_type}' message" if message_type else "message"
        log.warning("worker=%s sent a %s of %d bytes, over %s: not acted on", worker.worker_id, what, size, limit)
        if message_type == "invokefunction" and invocation_id is not None:
            text = f"the call of {function_id} is {size} bytes, over {limit}: not made"
            self._refuse_call(worker, invocation_id, function_id or "", errors.MESSAGE_TOO_BIG, text)
            return
        if message_type == "invocationresult" and invocation_id is not None:
            call = self.router.complete(invocation_id, worker)
            if call is not None:
                text = f"the result of {call.function_id} is {size} bytes, over {limit}"
                self._fail_calls([call], errors.MESSAGE_TOO_BIG, text)
                self.send_error_notice(worker, errors.MESSAGE_TOO_BIG, f"{text}: its caller got this error instead")
                return
        self.send_error_notice(worker, errors.MESSAGE_TOO_BIG, f"a {what} of {size} bytes is over {limit}: ignored")

    def send_error_notice(self, worker: WorkerConnection, code: str, message: str) -> None:
        """Tell a worker that one of its messages was refused, and why (counted by code)."""
        self.metrics.errors[code] += 1
        worker.send_error_notice(code, message)

    def _refuse_call(
        self, worker: WorkerConnection, caller_id: str | None, function_id: str, code: str, message: str
    ) -> None:
        """Answer a call the engine will not route (counted by code; void calls get nothing back)."""
        self.metrics.errors[code] += 1
        if caller_id is not None:
            worker.deliver_result(caller_id, function_id, JSON_NULL, error_raw(code, message))

    # --- message handlers ------------------------------------------------------------------------------

    def _on_invoke(self, worker: WorkerConnection, message: InvokeFunction) -> None:
        caller_id = message.invocation_id
        function_id = message.function_id
        action = message.action
        if action is not None:
            if action.type == "void":
                caller_id = None
            elif action.type == "enqueue":
                message_text = "this engine has no queue provider for 'enqueue'"
                self._refuse_call(worker, caller_id, function_id, errors.ENQUEUE_ERROR, message_text)
                return
            else:
                message_text = f"unknown action type {action.type!r}"
                self._refuse_call(worker, caller_id, function_id, errors.INVALID_MESSAGE, message_text)
                return
        entry = self.functions.get(function_id)
        if entry is None:
            self._refuse_call(
                worker, caller_id, function_id, errors.FUNCTION_NOT_FOUND, f"Function {function_id} not found"
            )
            return
        if entry.handler is not None:
            self._call_builtin(entry, worker, caller_id, message.data)
            return
        owner = entry.owner
        assert owner is not None
        if caller_id is not None and self.router.pending_for_caller(worker) >= self.config.worker_max_pending_calls:
            limit = self.config.worker_max_pending_calls
            message_text = f"this worker has {limit} calls waiting for results, its limit (--worker-max-pending-calls)"
            self._refuse_call(worker, caller_id, function_id, errors.LIMIT_EXCEEDED, message_text)
            return
        timeout_s = self.config.invocation_timeout_s
        if message.timeout_ms is not None and message.timeout_ms > 0:
            timeout_s = min(timeout_s, message.timeout_ms / 1000)
        call = self.router.start(
            entry.function_id, owner, worker if caller_id is not None else None, caller_id, timeout_s
        )
        self._send_on_behalf(
            worker,
            owner,
            encode(
                Delivery(
                    invocation_id=call.dispatch_id,
                    function_id=entry.function_id,
                    data=with_caller_worker_id(message.data, worker.worker_id),
                    metadata=message.metadata,
                    traceparent=message.traceparent,
                    baggage=message.baggage,
                )
            ),
        )

    def _call_builtin(
        self, entry: FunctionEntry, worker: WorkerConnection, caller_id: str | None, data: msgspec.Raw
    ) -> None:
        result, error = self._run_builtin(entry, worker, data)
        if caller_id is not None:
            worker.deliver_result(caller_id, entry.function_id, result, error)
            if worker.write_paused:
                worker.hold_reading_for(worker)  # it asks faster than it reads its answers

    @staticmethod
    def _run_builtin(
        entry: FunctionEntry, worker: WorkerConnection | None, data: msgspec.Raw
    ) -> tuple[msgspec.Raw, msgspec.Raw]:
        """Run an ``engine::*`` function; returns (result, error), one of them ``JSON_NULL``."""
        assert entry.handler is not None
        result = error = JSON_NULL
        try:
            result = msgspec.Raw(encode_value(entry.handler(worker, decode_value(data))))
        except BuiltinInputError as exc:
            error = error_raw(errors.DESERIALIZATION_ERROR, str(exc))
        except msgspec.DecodeError as exc:
            error = error_raw(errors.DESERIALIZATION_ERROR, f"the payload cannot be decoded: {exc}")
        except BuiltinLimitError as exc:
            error = error_raw(errors.LIMIT_EXCEEDED, str(exc))
        except BuiltinFailure as exc:
            error = error_raw(exc.code, exc.message)
        except Exception as exc:
            log.exception("builtin %s failed", entry.function_id)
            error = error_raw(errors.INVOCATION_FAILED, f"{type(exc).__name__}: {exc}")
        return result, error

    def call_from_engine(
        self,
        function_id: str,
        data: bytes,
        caller: Caller | None,
        caller_invocation_id: str | None,
        timeout_s: float,
        metadata: msgspec.Raw = JSON_NULL,
    ) -> tuple[str, str] | None:
        """Call a function on behalf of a part of the engine (an HTTP trigger, say).

        The outcome goes to ``caller.deliver_result`` (at once for a builtin); with no caller it is dropped
        (a fired event). Returns (code, message) instead if the call cannot start.
        """
        entry = self.functions.get(function_id)
        if entry is None:
            return errors.FUNCTION_NOT_FOUND, f"Function {function_id} not found"
        if entry.handler is not None:
            result, error = self._run_builtin(entry, None, msgspec.Raw(data))
            if caller is not None and caller_invocation_id is not None:
                caller.deliver_result(caller_invocation_id, function_id, result, error)
            return None
        owner = entry.owner
        assert owner is not None
        call = self.router.start(function_id, owner, caller, caller_invocation_id, timeout_s)
        owner.send_message(
            encode(
                Delivery(
                    invocation_id=call.dispatch_id, function_id=function_id, data=msgspec.Raw(data), metadata=metadata
                )
            )
        )
        return None

    def _on_result(self, worker: WorkerConnection, message: InvocationResult) -> None:
        call = self.router.complete(message.invocation_id, worker)
        if call is None:
            log.debug("worker=%s result for unknown or foreign invocation dropped", worker.worker_id)
            return
        outcome = OK if is_null(message.error) else _error_code(message.error)
        self.metrics.call_finished(outcome, time.monotonic() - call.started_at)
        if call.caller is not None and call.caller_invocation_id is not None:
            call.caller.deliver_result(call.caller_invocation_id, call.function_id, message.result, message.error)
            if isinstance(call.caller, WorkerConnection) and call.caller.write_paused:
                worker.hold_reading_for(call.caller)

    def _on_register_function(self, worker: WorkerConnection, message: RegisterFunction) -> None:
        function_id = message.id
        if not function_id:
            self.send_error_notice(worker, errors.INVALID_MESSAGE, "registerfunction needs a non-empty 'id'")
            return
        conflict = self.functions.register(
            FunctionEntry(
                function_id,
                owner=worker,
                description=message.description,
                # The message points into the socket's receive buffer; what is kept must be copied.
                metadata=detached(message.metadata),
                request_format=detached(message.request_format),
                response_format=detached(message.response_format),
            )
        )
        if conflict is not None:
            owner_id = conflict.owner.worker_id if conflict.owner is not None else ""
            if owner_id:
                log.info("worker=%s stands by for %s, served by worker %s", worker.worker_id, function_id, owner_id)
            else:
                log.warning("worker=%s refused function %s: it is built into the engine", worker.worker_id, function_id)
            worker.send_message(
                encode(
                    RegistrationRejected(
                        code=errors.FUNCTION_NAMESPACE_CONFLICT,
                        namespace="default",
                        function_id=function_id,
                        owner_worker_id=owner_id,
                    )
                )
            )
            return
        log.debug("worker=%s registered %s", worker.worker_id, function_id)
        worker.send_message(encode(FunctionActivated(function_id=function_id)))

    def _on_unregister_function(self, worker: WorkerConnection, message: UnregisterFunction) -> None:
        successor = self.functions.unregister(message.id, worker)
        if successor is not None:
            self._activate(successor, f"worker {worker.worker_id} withdrew it")

    def _activate(self, successor: FunctionEntry, why: str) -> None:
        """A standby now serves its function: tell it (our SDK shows the function as active again)."""
        owner = successor.owner
        assert owner is not None
        log.info("worker=%s now serves %s: %s", owner.worker_id, successor.function_id, why)
        owner.send_message(encode(FunctionActivated(function_id=successor.function_id)))

    def _on_reattach(self, worker: WorkerConnection, message: Reattach) -> None:
        """Retire the worker's previous connection and give its functions and pending calls to this one."""
        old = self.workers.get(message.previous_worker_id)
        if old is None or old is worker:
            return
        presented = message.reattach_token or ""
        if not secrets.compare_digest(presented.encode(), old.reattach_token.encode()):
            log.warning("worker=%s reattach to %s refused: wrong token", worker.worker_id, old.worker_id)
            return
        moved = self.functions.transfer(old, worker)
        self.router.retarget(old, worker)
        self.router.recall(old, worker)
        self.channels.transfer_owner(old.worker_id, worker.worker_id)
        self.triggers.transfer(old, worker)
        worker.name = worker.name or old.name
        worker.metadata = worker.metadata or old.metadata
        # Retire the old socket without the disconnect cleanup: everything it had now belongs to `worker`.
        old.alive = False
        self.workers.pop(old.worker_id, None)
        old.close(1001, "replaced by a reattaching connection")
        self.availability.worker_changed("worker_disconnected", old.worker_id)
        log.info("worker=%s reattached from %s functions=%d", worker.worker_id, old.worker_id, len(moved))

    def _on_ping(self, worker: WorkerConnection, message: Ping) -> None:
        worker.send_message(encode(Pong()))

    def _on_register_trigger_type(self, worker: WorkerConnection, message: RegisterTriggerType) -> None:
        if not message.id:
            self.send_error_notice(worker, errors.INVALID_MESSAGE, "registertriggertype needs a non-empty 'id'")
            return
        if self.triggers.is_builtin(message.id):
            problem = f"trigger type {message.id!r} is built into the engine and cannot be provided"
            self.send_error_notice(worker, errors.INVALID_MESSAGE, problem)
            return
        log.info("worker=%s provides trigger type %s", worker.worker_id, message.id)
        self._send_all(self.triggers.register_type(worker, message))

    def _on_unregister_trigger_type(self, worker: WorkerConnection, message: UnregisterTriggerType) -> None:
        self.triggers.unregister_type(worker, message.id)

    def _on_register_trigger(self, worker: WorkerConnection, message: RegisterTrigger) -> None:
        if not message.id or not message.trigger_type or not message.function_id:
            self.send_error_notice(
                worker, errors.INVALID_MESSAGE, "registertrigger needs non-empty 'id', 'trigger_type' and 'function_id'"
            )
            return
        self._send_all(self.triggers.bind(worker, message))

    def _on_unregister_trigger(self, worker: WorkerConnection, message: UnregisterTrigger) -> None:
        self._send_all(self.triggers.unbind(worker, message.id))

    def _on_trigger_registration_result(self, worker: WorkerConnection, message: TriggerRegistrationResult) -> None:
        self._send_all(self.triggers.on_provider_result(worker, message))

    @staticmethod
    def _send_all(outgoing: list[tuple[Host, Message]]) -> None:
        for host, message in outgoing:
            host.send_message(encode(message))

    # --- helpers ---------------------------------------------------------------------------------------

    @staticmethod
    def _send_on_behalf(source: WorkerConnection, target: Host, payload: bytes) -> None:
        """Send to ``target``; if its outgoing buffer is full, stop reading ``source`` until it drains.

        This keeps every worker's outgoing buffer bounded (by its high-water mark plus what one read of the
        senders can bring) without dropping anything: TCP pushes back on whoever produces the traffic.
        """
        target.send_message(payload)
        if isinstance(target, WorkerConnection) and target.write_paused:
            source.hold_reading_for(target)

    def _fail_calls(self, calls: list[PendingCall], code: str, message: str) -> None:
        error = error_raw(code, message)
        now = time.monotonic()
        for call in calls:
            self.metrics.call_finished(code, now - call.started_at)
            if call.caller is not None and call.caller_invocation_id is not None:
                call.caller.deliver_result(call.caller_invocation_id, call.function_id, JSON_NULL, error)
