"""The engine's core: its tables and what each worker message does to them. No sockets, no event loop needed.

The tables are the functions (:mod:`iii.engine.registry`), the calls waiting for results
(:mod:`iii.engine.router`), the channels (:mod:`iii.engine.channels`), the trigger types and bindings
(:mod:`iii.engine.triggers`) and the connected workers. The server (:mod:`iii.engine.server`) accepts sockets
and hands each worker's messages here; modules (:mod:`iii.engine.module_host`) reach the core only through
the interface of :mod:`iii.modules.api`.

Every call starts in one place, ``core.calls.start`` (:mod:`iii.engine.calling`), whoever makes it: a worker's
``invokefunction``, a module (the http module for an HTTP request), a fired trigger. Message handling is
synchronous: an invocation is decoded, routed and written to its host without a task switch.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from iii.engine.availability import Availability
from iii.engine.builtins import Builtins
from iii.engine.calling import Calls, error_raw
from iii.engine.channels import ChannelManager
from iii.engine.config import EngineConfig
from iii.engine.enqueue import ENQUEUE_PROVIDER, EnqueueAnswer, enqueue_request, enqueue_span
from iii.engine.metrics import EngineMetrics
from iii.engine.observer_records import ObserveRefused, parse_descriptor
from iii.engine.observing import ENGINE_FEATURES, Observing
from iii.engine.peers import Host
from iii.engine.registry import (
    BuiltinFailure,
    BuiltinHandler,
    FunctionEntry,
    FunctionRegistry,
)
from iii.engine.router import InvocationRouter
from iii.engine.spans import EngineSpans, in_trace
from iii.engine.triggers import TriggerRegistry
from iii.protocol import close_codes, errors
from iii.protocol.codec import MalformedMessage, decode_value, detached, encode
from iii.protocol.messages import (
    FUNCTION_STATUS_FEATURE,
    JSON_NULL,
    FunctionActivated,
    InboundMessage,
    InvocationResult,
    InvocationsObserved,
    InvokeFunction,
    Message,
    Observe,
    ObserverAck,
    Ping,
    Pong,
    Reattach,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    RegistrationRejected,
    TriggerRegistrationResult,
    Unobserve,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
    WorkerRegistered,
    is_null,
)

if TYPE_CHECKING:
    from iii.engine.links import EngineLink
    from iii.engine.worker_socket import WorkerConnection
    from iii.modules.api import TelemetrySink

log = logging.getLogger("iii.engine")

FUNCTION_KIND_FIELDS: Final = ("invocation",)
"""The ``registerfunction`` fields that make a function one a module serves for the worker registering it."""

KindAcceptor = Callable[[str, str, Any, "str | None", Any], BuiltinHandler]
"""A module's check of a registration of its kind: ``accept(worker_id, function_id, config, description,
metadata)`` returns the handler that serves it, or raises :class:`BuiltinFailure` to refuse it."""


def _kind_of(message: RegisterFunction) -> tuple[str, msgspec.Raw] | None:
    """The field naming the registration's function kind, and its value; None for a worker's own function."""
    for field in FUNCTION_KIND_FIELDS:
        value: msgspec.Raw = getattr(message, field)
        if not is_null(value):
            return field, value
    return None


def _local_id(worker: WorkerConnection, function_id: str) -> str:
    """The id under which ``worker`` registered the function the engine knows as ``function_id`` (they differ only
    for a connection whose session renames its registrations)."""
    return function_id if worker.session is None else worker.session.local_id(function_id)


class Core:
    """The tables of one engine and the operations on them (see the module docstring)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.functions = FunctionRegistry()
        self.router = InvocationRouter()
        self.channels = ChannelManager(
            default_buffer_frames=config.channel_default_buffer_frames,
            max_buffer_frames=config.channel_max_buffer_frames,
            buffer_bytes=config.channel_buffer_bytes,
            ttl_s=config.channel_ttl_s,
        )
        self.workers: dict[str, WorkerConnection] = {}
        self.triggers = TriggerRegistry()
        self.metrics = EngineMetrics(self)
        self.calls = Calls(config, self.functions, self.router, self.metrics)
        self.observing = Observing(self)
        self.calls.observing = self.observing
        self.builtins = Builtins(self)
        self.builtins.install()
        self.availability = Availability(self)
        self._worker_left: list[Callable[[str], None]] = []
        self._kinds: dict[str, tuple[str, KindAcceptor]] = {}
        """The module and acceptor of each function kind, by its ``registerfunction`` field."""
        self._telemetry: tuple[str, TelemetrySink] | None = None
        """The module that receives the SDKs' telemetry, and its sink (None: it is dropped)."""
        self.spans: EngineSpans | None = None
        """The engine's own spans, kept by the module that receives telemetry (None: there is none, no span is
        recorded; :mod:`iii.engine.spans`)."""
        self._handlers: dict[type[Any], Callable[[WorkerConnection, Any], None]] = {
            InvokeFunction: self._on_invoke,
            InvocationResult: self.calls.on_result,
            RegisterFunction: self._on_register_function,
            UnregisterFunction: self._on_unregister_function,
            Reattach: self._on_reattach,
            Ping: self._on_ping,
            RegisterTriggerType: self._on_register_trigger_type,
            UnregisterTriggerType: self._on_unregister_trigger_type,
            RegisterTrigger: self._on_register_trigger,
            UnregisterTrigger: self._on_unregister_trigger,
            TriggerRegistrationResult: self._on_trigger_registration_result,
            Observe: self.observing.on_observe,
            Unobserve: self.observing.on_unobserve,
            ObserverAck: self.observing.on_ack,
            InvocationsObserved: self.observing.report,
        }

    def on_worker_left(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(worker_id)`` after a worker's disconnect has been cleaned up."""
        self._worker_left.append(callback)

    def provide_function_kind(self, field: str, module: str, accept: KindAcceptor) -> None:
        """Have ``module`` serve the functions that workers register with ``field`` (see :data:`KindAcceptor`);
        ``ValueError`` if ``field`` is not one of :data:`FUNCTION_KIND_FIELDS` or is provided already."""
        if field not in FUNCTION_KIND_FIELDS:
            raise ValueError(f"module {module}: {field!r} is not a registerfunction field naming a function kind")
        provided = self._kinds.get(field)
        if provided is not None:
            raise ValueError(f"module {module}: functions with {field!r} are served by module {provided[0]}")
        self._kinds[field] = (module, accept)

    def provide_telemetry_sink(self, module: str, sink: TelemetrySink) -> None:
        """Have ``module``'s ``sink`` receive the telemetry messages the server accepts; ``ValueError`` if another
        module receives them already."""
        if self._telemetry is not None:
            raise ValueError(f"module {module}: telemetry is received by module {self._telemetry[0]}")
        self._telemetry = (module, sink)
        self.spans = self.calls.spans = EngineSpans(sink)

    @property
    def receives_telemetry(self) -> bool:
        """Whether a module receives telemetry (else the server need not even assemble the messages)."""
        return self._telemetry is not None

    def on_telemetry(self, message: bytes) -> None:
        """Hand one telemetry message to the module that receives them, if any; a sink that raises loses only this
        message (logged), never the connection it came on."""
        if self._telemetry is None:
            return
        module, sink = self._telemetry
        try:
            sink.receive(message)
        except Exception:
            log.exception("module=%s failed on a telemetry message of %d bytes; dropped", module, len(message))

    # --- workers --------------------------------------------------------------------------------

    def on_worker_connected(self, worker: WorkerConnection) -> None:
        self.workers[worker.worker_id] = worker
        # observe.v1 is not offered to a worker under a session (the RBAC port): what observing means for an
        # untrusted worker (whose calls its policy sees, whose functions it renames) is not decided yet.
        observe = ENGINE_FEATURES if worker.session is None else ()
        worker.send_message(
            encode(
                WorkerRegistered(
                    worker_id=worker.worker_id,
                    reattach_token=worker.reattach_token,
                    features=[close_codes.STRICT_CLOSE_FEATURE, FUNCTION_STATUS_FEATURE, *observe],
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
        for function_id in removed:
            self.observing.function_removed(function_id, worker)
        for successor in promoted:
            self._activate(successor, f"worker {worker.worker_id} left")
        self.observing.worker_left(worker)
        stopped = self.router.take_target(worker)
        who = worker.name or worker.worker_id
        self.calls.fail(stopped, errors.INVOCATION_STOPPED, f"Invocation stopped: worker {who} disconnected")
        abandoned = self.calls.abandon(worker)
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
        for callback in list(self._worker_left):
            try:
                callback(worker.worker_id)
            except Exception:
                log.exception("a worker-left callback failed")

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
                self.calls.fail([call], errors.MESSAGE_TOO_BIG, text)
                self.send_error_notice(worker, errors.MESSAGE_TOO_BIG, f"{text}: its caller got this error instead")
                return
        self.send_error_notice(worker, errors.MESSAGE_TOO_BIG, f"a {what} of {size} bytes is over {limit}: ignored")

    def send_error_notice(
        self, worker: WorkerConnection, code: str, message: str, function_id: str | None = None
    ) -> None:
        """Tell a worker that one of its messages was refused, and why (counted by code); ``function_id`` names
        the function whose registration it was."""
        self.metrics.errors[code] += 1
        worker.send_error_notice(code, message, function_id)

    def _refuse_call(
        self, worker: WorkerConnection, caller_id: str | None, function_id: str, code: str, message: str
    ) -> None:
        """Answer a call the engine will not route (counted by code; void calls get nothing back)."""
        self.metrics.errors[code] += 1
        if caller_id is not None:
            worker.deliver_result(caller_id, function_id, JSON_NULL, error_raw(code, message))

    # --- links to other engines (a cluster) -------------------------------------------------------------

    def add_remote_function(self, function_id: str, link: EngineLink, description: str | None = None) -> bool:
        """Route calls of ``function_id`` over ``link``: the cluster's registry says the engine there serves it.
        A worker of this engine that serves it too stands by (the registry decides, as the first owner does on
        one engine); False for an id served inside this engine."""
        entry = FunctionEntry(function_id, owner=link, description=description)
        try:
            demoted = self.functions.take_over(entry)
        except ValueError:
            return False
        if demoted is not None and demoted.owner is not None:
            self.observing.function_removed(function_id, demoted.owner)
        self.observing.function_registered(entry)
        return True

    def remove_remote_function(self, function_id: str, link: EngineLink) -> None:
        entry = self.functions.get(function_id)
        if entry is None or entry.owner is not link:
            return
        successor = self.functions.unregister(function_id, link)
        self.observing.function_removed(function_id, link)
        if successor is not None:
            self._activate(successor, f"{link.name} no longer carries it")

    def on_link_result(self, link: EngineLink, message: InvocationResult) -> None:
        """The other engine answered a call this engine sent over ``link``."""
        self.calls.on_result(link, message)

    def link_lost(self, link: EngineLink) -> None:
        """A link is down: the calls in flight on it fail now (``invocation_stopped``), its functions go."""
        removed, promoted = self.functions.remove_owner(link)
        for function_id in removed:
            self.observing.function_removed(function_id, link)
        for successor in promoted:
            self._activate(successor, f"{link.name} was lost")
        stopped = self.router.take_target(link)
        self.calls.fail(stopped, errors.INVOCATION_STOPPED, f"Invocation stopped: the {link.name} was lost")
        log.info("%s lost: functions=%d stopped_calls=%d", link.name, len(removed), len(stopped))

    # --- message handlers ------------------------------------------------------------------------------

    def _on_invoke(self, worker: WorkerConnection, message: InvokeFunction) -> None:
        caller_id = message.invocation_id
        function_id = message.function_id
        action = message.action
        if action is not None:
            if action.type == "void":
                caller_id = None
            elif action.type == "enqueue":
                self._enqueue(worker, message, action.queue)
                return
            else:
                message_text = f"unknown action type {action.type!r}"
                self._refuse_call(worker, caller_id, function_id, errors.INVALID_MESSAGE, message_text)
                return
        timeout_s = self.config.invocation_timeout_s
        if message.timeout_ms is not None and message.timeout_ms > 0:
            timeout_s = min(timeout_s, message.timeout_ms / 1000)
        if not is_null(message.activation):  # an owner's delivery to one of its observers (observe.v1)
            problem = self.observing.owner_call(worker, message, caller_id, timeout_s)
            if problem is not None:
                self._refuse_call(worker, caller_id, function_id, *problem)
            return
        problem = self.calls.start(
            function_id,
            message.data,
            caller=worker if caller_id is not None else None,
            caller_invocation_id=caller_id,
            timeout_s=timeout_s,
            source=worker,
            metadata=message.metadata,
            traceparent=message.traceparent,
            baggage=message.baggage,
            asserted_caller=message.caller,
            observe_depth=message.observe_depth,
        )
        if problem is not None:
            self._refuse_call(worker, caller_id, function_id, *problem)

    def _enqueue(self, worker: WorkerConnection, message: InvokeFunction, queue: str | None) -> None:
        """Hand an ``enqueue`` action to the queue provider (:mod:`iii.engine.enqueue`)."""
        caller_id = message.invocation_id
        function_id = message.function_id
        if not queue:
            text = "an enqueue action needs a 'queue' (the name of the queue)"
            self._refuse_call(worker, caller_id, function_id, errors.ENQUEUE_ERROR, text)
            return
        traceparent = message.traceparent
        span = None
        if self.spans is not None and in_trace(traceparent):
            span = enqueue_span(self.spans, queue, function_id, traceparent)
            traceparent = span.traceparent
        receipt, payload = enqueue_request(queue, function_id, message.data, traceparent, message.baggage)
        answer = None
        if caller_id is not None or span is not None:  # the enqueuer's answer, the span's end
            answer = EnqueueAnswer(
                worker if caller_id is not None else None, caller_id or receipt, function_id, receipt, span
            )
        problem = self.calls.start(
            ENQUEUE_PROVIDER,
            payload,
            caller=answer,
            caller_invocation_id=(caller_id or receipt) if answer is not None else None,
            timeout_s=self.config.invocation_timeout_s,
            source=worker,
            traceparent=traceparent,
            baggage=message.baggage,
        )
        if problem is not None:
            if answer is not None:
                answer.deliver_result(caller_id or "", ENQUEUE_PROVIDER, JSON_NULL, error_raw(*problem))
            self.metrics.errors[errors.ENQUEUE_ERROR] += 1

    def _on_register_function(self, worker: WorkerConnection, message: RegisterFunction) -> None:
        function_id = message.id
        if not function_id:
            self.send_error_notice(worker, errors.INVALID_MESSAGE, "registerfunction needs a non-empty 'id'")
            return
        handler: BuiltinHandler | None = None
        module: str | None = None
        kind = _kind_of(message)
        if kind is not None:
            accepted = self._accept_kind(worker, message, *kind)
            if accepted is None:
                return
            module, handler = accepted
        try:
            observe = parse_descriptor(function_id, message.observe)
        except ObserveRefused as refused:
            self._refuse_registration(worker, function_id, refused.code, refused.message)
            return
        entry = FunctionEntry(
            function_id,
            owner=worker,
            handler=handler,
            description=message.description,
            # The message points into the socket's receive buffer; what is kept must be copied.
            metadata=detached(message.metadata),
            request_format=detached(message.request_format),
            response_format=detached(message.response_format),
            module=module,
            kind=kind[0] if kind is not None else None,
            observe=observe,
        )
        conflict = self.functions.register(entry)
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
        if kind is not None:  # its config is the module's business (it may name secrets): not logged
            log.info("worker=%s registered %s with %s, served by %s", worker.worker_id, function_id, kind[0], module)
        else:
            log.debug("worker=%s registered %s", worker.worker_id, function_id)
        worker.send_message(encode(FunctionActivated(function_id=_local_id(worker, function_id))))
        self.observing.function_registered(entry)

    def _accept_kind(
        self, worker: WorkerConnection, message: RegisterFunction, field: str, config: msgspec.Raw
    ) -> tuple[str, BuiltinHandler] | None:
        """The module and handler that serve a registration with ``field``; None when it is refused (the worker
        is told why, with an error notice naming the function; an earlier registration of it stays)."""
        function_id = message.id
        provided = self._kinds.get(field)
        if provided is None:
            problem = f"function {function_id} has '{field}', and no module of this engine serves such functions"
            self._refuse_registration(worker, function_id, errors.NOT_SUPPORTED, problem)
            return None
        module, accept = provided
        try:
            value = decode_value(config)
        except (msgspec.DecodeError, RecursionError) as exc:
            problem = f"the '{field}' of function {function_id} cannot be decoded: {exc}"
            self._refuse_registration(worker, function_id, errors.INVALID_MESSAGE, problem)
            return None
        try:
            metadata = None if is_null(message.metadata) else decode_value(message.metadata)
        except (msgspec.DecodeError, RecursionError):  # kept as sent for the listings; the module goes without
            metadata = None
        try:
            handler = accept(worker.worker_id, function_id, value, message.description, metadata)
        except BuiltinFailure as exc:
            self._refuse_registration(worker, function_id, exc.code, exc.message)
            return None
        except Exception:  # the module's bug: the worker learns that much, the log has the rest
            log.exception("module %s failed to check function %s of worker %s", module, function_id, worker.worker_id)
            problem = f"module {module} could not check function {function_id}"
            self._refuse_registration(worker, function_id, errors.INVOCATION_FAILED, problem)
            return None
        return module, handler

    def _refuse_registration(self, worker: WorkerConnection, function_id: str, code: str, message: str) -> None:
        log.warning("worker=%s function %s refused: %s: %s", worker.worker_id, function_id, code, message)
        self.send_error_notice(worker, code, message, _local_id(worker, function_id))

    def _on_unregister_function(self, worker: WorkerConnection, message: UnregisterFunction) -> None:
        entry = self.functions.get(message.id)
        successor = self.functions.unregister(message.id, worker)
        if entry is not None and entry.owner is worker:
            self.observing.function_removed(message.id, worker)
        if successor is not None:
            self._activate(successor, f"worker {worker.worker_id} withdrew it")

    def _activate(self, successor: FunctionEntry, why: str) -> None:
        """A standby now serves its function: tell it (our SDK shows the function as active again)."""
        owner = successor.owner
        assert owner is not None
        log.info("worker=%s now serves %s: %s", owner.worker_id, successor.function_id, why)
        owner.send_message(encode(FunctionActivated(function_id=successor.function_id)))
        self.observing.function_registered(successor)

    def _on_reattach(self, worker: WorkerConnection, message: Reattach) -> None:
        """Retire the worker's previous connection and give its functions and pending calls to this one."""
        old = self.workers.get(message.previous_worker_id)
        if old is None or old is worker or old.session is not None:  # a session's functions are not handed over
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
        self.observing.table.transfer(old, worker)
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
        self._send_all(self.triggers.unregister_type(worker, message.id))

    def _on_register_trigger(self, worker: WorkerConnection, message: RegisterTrigger) -> None:
        if not message.id or not message.trigger_type or not message.function_id:
            self.send_error_notice(
                worker, errors.INVALID_MESSAGE, "registertrigger needs non-empty 'id', 'trigger_type' and 'function_id'"
            )
            return
        if not self.triggers.is_provided(message.trigger_type):
            took_over = self.observing.table.legacy_source(message.trigger_type)
            if took_over is not None:  # a function took this trigger type over (observe.v1): it is an observer
                self.observing.bind_legacy(worker, message, took_over.function_id)
                return
        self._send_all(self.triggers.bind(worker, message))

    def _on_unregister_trigger(self, worker: WorkerConnection, message: UnregisterTrigger) -> None:
        if not self.observing.unbind_legacy(worker, message.id):
            self._send_all(self.triggers.unbind(worker, message.id))

    def _on_trigger_registration_result(self, worker: WorkerConnection, message: TriggerRegistrationResult) -> None:
        self._send_all(self.triggers.on_provider_result(worker, message))

    @staticmethod
    def _send_all(outgoing: list[tuple[Host, Message]]) -> None:
        for host, message in outgoing:
            host.send_message(encode(message))

    # --- helpers ---------------------------------------------------------------------------------------
