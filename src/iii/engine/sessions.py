"""Workers of a module's worker port: admitted by the module's gate, then held to the policy it gave them.

A worker that connects to a port a module opened (:meth:`~iii.modules.api.ModuleHost.serve_workers`: the rbac
module's listener) is unknown to the core until the module's :class:`~iii.modules.api.WorkerGate` admits it;
what it sends meanwhile waits, and a refused worker gets an ``error`` message and a close (1008, or 1013 when the
gate could not decide now). Once admitted, every message it sends passes its
:class:`~iii.modules.api.WorkerPolicy` on its way to the core, in the order sent:

* a call is refused (the policy's error, ``FORBIDDEN``) unless the worker may call the function; then the
  policy may answer it itself (a middleware), else it is made as any worker's call;
* a registration of a function, a trigger or a trigger type is rewritten or refused by the policy, which may
  wait for a hook function: later messages wait behind it. The core gets the new ids; the worker keeps its own
  (calls reach it under the function id it registered, its acknowledgements name it);
* results, pings and a trigger provider's answers go on as they are;
* anything else (a reattach; a message type added to the protocol later) is refused, so that nothing reaches
  past the policy before someone decides what the policy says of it.

On top of any policy, three rules protect the workers of the ordinary port: a gated worker never stands by for
a function another worker serves (a standby takes over when the owner leaves), never takes over a trigger type
another worker provides, and cannot bind the engine's own trigger types (their payloads list every function and
worker, which its policy may hide). A gated worker may always call, see and bind its own functions.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from iii.engine.calling import error_raw
from iii.engine.registry import FunctionEntry
from iii.modules.api import (
    AdmissionError,
    FunctionDeclaration,
    FunctionError,
    InterceptedCall,
    InvocationError,
    TriggerDeclaration,
    TriggerTypeDeclaration,
    WorkerGate,
    WorkerPolicy,
    WorkerRequest,
)
from iii.protocol import close_codes, errors
from iii.protocol.codec import decode_value, encode, encode_value, with_caller_worker_id
from iii.protocol.messages import (
    JSON_NULL,
    InboundMessage,
    InvocationResult,
    InvokeFunction,
    Ping,
    RegisterFunction,
    RegisterTrigger,
    RegisterTriggerType,
    TriggerRegistrationResult,
    UnregisterFunction,
    UnregisterTrigger,
    UnregisterTriggerType,
    is_null,
)

if TYPE_CHECKING:
    from iii.engine.core import Core
    from iii.engine.worker_socket import WorkerConnection

log = logging.getLogger("iii.engine.sessions")

_MAX_QUEUED_MESSAGES: Final = 10_000
"""Messages a gated worker may have waiting (for its admission, or behind a registration's hook) before it is
disconnected; their bytes are bounded by ``--max-message-bytes`` too."""
_MAX_CLOSE_REASON_BYTES: Final = 123
"""The longest reason a WebSocket close frame carries (RFC 6455 §5.5: 125 bytes with the code)."""

_PASSED_ON: Final = (InvocationResult, Ping, TriggerRegistrationResult)
"""Messages that reach nobody a policy protects: the router takes a result only from the call's target, a ping
is answered, a provider's answer concerns a binding it was given."""

_Declared = TypeVar("_Declared", FunctionDeclaration, TriggerDeclaration, TriggerTypeDeclaration)
_Refuse = Callable[[str, str], None]


def _decoded(raw: msgspec.Raw) -> Any:
    """A stored or received JSON value (None for null or absent); ``msgspec.DecodeError`` if no value holds it."""
    return None if is_null(raw) else decode_value(raw)


def _raw(value: Any) -> msgspec.Raw:
    return JSON_NULL if value is None else msgspec.Raw(encode_value(value))


def _metadata(entry: FunctionEntry | None) -> Any:
    """A function's metadata for a policy (None when there is no function, or no readable metadata)."""
    if entry is None:
        return None
    try:
        return _decoded(entry.metadata)
    except (msgspec.DecodeError, RecursionError):
        return None


def close_reason(code: str, message: str) -> str:
    """``code: message``, cut to what a close frame holds (whole UTF-8 characters)."""
    text = f"{code}: {message}".encode()
    return text[:_MAX_CLOSE_REASON_BYTES].decode("utf-8", errors="ignore")


class GatedSession:
    """One connection of a module's worker port (see the module docstring); the core's
    :class:`~iii.engine.peers.ConnectionSession`."""

    def __init__(
        self, core: Core, gate: WorkerGate, module: str, headers: dict[str, str], query: dict[str, list[str]]
    ) -> None:
        self._core = core
        self._gate = gate
        self.module = module
        self._headers = headers
        self._query = query
        self._worker: WorkerConnection | None = None
        self._policy: WorkerPolicy | None = None
        """Set once the gate admitted the worker (the core knows it from then on)."""
        self._closed = False
        self._queue: collections.deque[tuple[InboundMessage, int]] = collections.deque()
        self._queued_bytes = 0
        self._waiting: asyncio.Future[None] | None = None
        """The admission, or a registration waiting for the policy: the queue waits until it is done."""
        self._calls: set[asyncio.Future[Any]] = set()
        """Calls the policy answers itself, in progress."""
        self._local_ids: dict[str, str] = {}
        """Functions the policy renamed: the engine's id → the id the worker registered."""
        self._function_ids: dict[str, str] = {}
        self._trigger_ids: dict[str, str] = {}
        self._type_ids: dict[str, str] = {}
        """The worker's ids of its functions, triggers and trigger types → the engine's."""
        self._handlers: dict[type[Any], Callable[[Any], asyncio.Future[None] | None]] = {
            InvokeFunction: self._on_invoke,
            RegisterFunction: self._on_register_function,
            UnregisterFunction: self._on_unregister_function,
            RegisterTrigger: self._on_register_trigger,
            UnregisterTrigger: self._on_unregister_trigger,
            RegisterTriggerType: self._on_register_trigger_type,
            UnregisterTriggerType: self._on_unregister_trigger_type,
        }

    # --- the connection --------------------------------------------------------------------------------

    def on_connected(self, worker: WorkerConnection) -> None:
        """Ask the gate about the worker; what it sends waits for the answer."""
        self._worker = worker
        request = WorkerRequest(self._headers, self._query, worker.peer_address)
        self._headers = {}  # credentials are kept no longer than the gate needs them
        self._waiting = asyncio.ensure_future(self._admit(request))

    def on_message(self, message: InboundMessage, size: int) -> None:
        if self._closed:
            return
        self._queue.append((message, size))
        self._queued_bytes += size
        if len(self._queue) > _MAX_QUEUED_MESSAGES or self._queued_bytes > self._core.config.max_message_bytes:
            worker = self._worker
            assert worker is not None
            log.warning(
                "worker=%s on the %s port sent more than it may have waiting (%d messages, %d bytes): disconnected",
                worker.worker_id,
                self.module,
                len(self._queue),
                self._queued_bytes,
            )
            self._drop_queue()
            worker.close(close_codes.POLICY_VIOLATION, "too many messages waiting for admission or registration hooks")
            return
        self._pump()

    def on_disconnected(self, was_alive: bool) -> None:
        self._closed = True
        self._drop_queue()
        if self._waiting is not None:
            self._waiting.cancel()
            self._waiting = None
        for call in list(self._calls):
            call.cancel()  # inside the engine, the call it waits for is dropped
        if self._policy is not None and was_alive and self._worker is not None:
            self._core.on_worker_disconnected(self._worker)

    # --- what the core asks ----------------------------------------------------------------------------

    def visible(self, function_id: str, entry: FunctionEntry | None) -> bool:
        if self._own(entry):
            return True
        policy = self._policy
        if policy is None:
            return False
        try:
            policy.check_call(function_id, _metadata(entry))
        except Exception:  # refused, or a policy that fails: hidden either way
            return False
        return True

    def local_id(self, function_id: str) -> str:
        return self._local_ids.get(function_id, function_id)

    # --- admission -------------------------------------------------------------------------------------

    async def _admit(self, request: WorkerRequest) -> None:
        worker = self._worker
        assert worker is not None
        try:
            policy = await self._gate.admit(request)
        except AdmissionError as refusal:
            self._refuse_worker(refusal.code, refusal.message, temporary=refusal.temporary)
            return
        except FunctionError as refusal:
            self._refuse_worker(refusal.code, refusal.message, temporary=False)
            return
        except Exception:
            log.exception("module %s failed to admit worker %s: refused", self.module, worker.worker_id)
            self._refuse_worker(errors.AUTH_ERROR, "the engine could not admit this worker", temporary=True)
            return
        if self._closed:
            return
        self._policy = policy
        self._waiting = None
        self._core.on_worker_connected(worker)
        log.info("worker=%s admitted on the %s port", worker.worker_id, self.module)
        self._pump()

    def _refuse_worker(self, code: str, message: str, *, temporary: bool) -> None:
        worker = self._worker
        assert worker is not None
        self._waiting = None
        if self._closed:
            return
        self._drop_queue()
        self._core.send_error_notice(worker, code, message)
        close_code = close_codes.TRY_AGAIN_LATER if temporary else close_codes.POLICY_VIOLATION
        log.info(
            "worker=%s from %s refused on the %s port: %s (close %d)",
            worker.worker_id,
            worker.peer_address,
            self.module,
            code,
            close_code,
        )
        worker.close(close_code, close_reason(code, message))

    # --- messages, in order ----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Hand the waiting messages on, in order, until one must wait for the policy or none is left."""
        while self._queue and self._waiting is None and self._policy is not None and not self._closed:
            message, size = self._queue.popleft()
            self._queued_bytes -= size
            if isinstance(message, _PASSED_ON):
                self._core.on_worker_message(self._admitted, message)
                continue
            handler = self._handlers.get(type(message))
            if handler is None:
                self._refuse_message(message)
                continue
            self._waiting = handler(message)

    def _drop_queue(self) -> None:
        self._queue.clear()
        self._queued_bytes = 0

    @property
    def _admitted(self) -> WorkerConnection:
        worker = self._worker
        assert worker is not None and self._policy is not None
        return worker

    @property
    def _admitted_policy(self) -> WorkerPolicy:
        assert self._policy is not None
        return self._policy

    def _own(self, entry: FunctionEntry | None) -> bool:
        return entry is not None and self._worker is not None and entry.owner is self._worker

    def _refuse_message(self, message: InboundMessage) -> None:
        kind = message.__struct_config__.tag
        log.info("worker=%s on the %s port sent '%s': not accepted there", self._admitted.worker_id, self.module, kind)
        problem = f"'{kind}' messages are not accepted on this port"
        self._core.send_error_notice(self._admitted, errors.NOT_SUPPORTED, problem)

    def _step(
        self,
        ask: Callable[[_Declared], _Declared | Awaitable[_Declared]],
        declared: _Declared,
        apply: Callable[[_Declared], None],
        refuse: _Refuse,
    ) -> asyncio.Future[None] | None:
        """Ask the policy about ``declared``, then ``apply`` its answer or ``refuse`` (code, message); a future
        when the answer must be waited for (the queue waits behind it)."""
        try:
            outcome = ask(declared)
        except FunctionError as refusal:
            refuse(refusal.code, refusal.message)
            return None
        except Exception:
            log.exception("module %s failed to check a registration", self.module)
            refuse(errors.FORBIDDEN, f"module {self.module} could not check this registration")
            return None
        if inspect.isawaitable(outcome):
            return asyncio.ensure_future(self._finish_step(outcome, apply, refuse))
        apply(outcome)
        return None

    async def _finish_step(
        self, pending: Awaitable[_Declared], apply: Callable[[_Declared], None], refuse: _Refuse
    ) -> None:
        try:
            try:
                answer = await pending
            except (FunctionError, InvocationError) as refusal:
                if not self._closed:
                    refuse(refusal.code, refusal.message)
                return
            except Exception:
                log.exception("module %s failed to check a registration", self.module)
                if not self._closed:
                    refuse(errors.FORBIDDEN, f"module {self.module} could not check this registration")
                return
            if not self._closed:
                apply(answer)
        finally:
            if not self._closed:
                self._waiting = None
                self._pump()

    # --- calls -----------------------------------------------------------------------------------------

    def _on_invoke(self, message: InvokeFunction) -> None:
        worker, policy = self._admitted, self._admitted_policy
        function_id = message.function_id
        void = message.action is not None and message.action.type == "void"
        caller_id = None if void else message.invocation_id
        entry = self._core.functions.get(function_id)
        timeout_ms = message.timeout_ms or 0
        try:
            if not self._own(entry):
                policy.check_call(function_id, _metadata(entry))
            payload = _decoded(with_caller_worker_id(message.data, worker.worker_id))
            call = InterceptedCall(
                function_id,
                payload,
                action=_action(message),
                metadata=_decoded(message.metadata),
                timeout_s=timeout_ms / 1000 if timeout_ms > 0 else None,
                engine_builtin=entry is not None and entry.owner is None and entry.module is None,
            )
            pending = policy.intercept(call)
        except FunctionError as refusal:
            log.info("worker=%s call of %s refused: %s", worker.worker_id, function_id, refusal.code)
            self._fail(caller_id, function_id, refusal.code, refusal.message)
            return None
        except (msgspec.DecodeError, RecursionError) as exc:
            self._fail(caller_id, function_id, errors.DESERIALIZATION_ERROR, f"the payload cannot be decoded: {exc}")
            return None
        except Exception:
            log.exception("module %s failed to check a call of %s", self.module, function_id)
            self._fail(caller_id, function_id, errors.FORBIDDEN, f"module {self.module} could not check this call")
            return None
        if pending is None:
            self._core.on_worker_message(worker, message)
            return None
        limit = self._core.config.worker_max_pending_calls
        if len(self._calls) >= limit:
            problem = f"this worker has {limit} calls waiting for results, its limit (--worker-max-pending-calls)"
            self._fail(caller_id, function_id, errors.LIMIT_EXCEEDED, problem)
            return None
        future = asyncio.ensure_future(pending)
        self._calls.add(future)
        future.add_done_callback(lambda done: self._intercepted(done, caller_id, function_id))
        return None

    def _intercepted(self, done: asyncio.Future[Any], caller_id: str | None, function_id: str) -> None:
        """A call the policy answered itself is over: its outcome goes to the worker."""
        self._calls.discard(done)
        if done.cancelled():
            return
        exc = done.exception()
        if isinstance(exc, FunctionError | InvocationError):
            self._fail(caller_id, function_id, exc.code, exc.message)
            return
        if exc is not None:
            log.error("module %s failed to answer a call of %s", self.module, function_id, exc_info=exc)
            problem = f"module {self.module} failed to answer this call: {type(exc).__name__}"
            self._fail(caller_id, function_id, errors.INVOCATION_FAILED, problem)
            return
        try:
            result = _raw(done.result())
        except Exception as problem:  # not JSON
            message = f"the result of {function_id} cannot be sent: {problem}"
            self._fail(caller_id, function_id, errors.INVOCATION_FAILED, message)
            return
        if caller_id is not None and not self._closed:
            self._admitted.deliver_result(caller_id, function_id, result, JSON_NULL)

    def _fail(self, caller_id: str | None, function_id: str, code: str, message: str) -> None:
        """Answer the worker's call with an error (counted by code; a void call gets nothing back)."""
        self._core.metrics.errors[code] += 1
        if caller_id is not None and not self._closed:
            self._admitted.deliver_result(caller_id, function_id, JSON_NULL, error_raw(code, message))

    # --- functions -------------------------------------------------------------------------------------

    def _on_register_function(self, message: RegisterFunction) -> asyncio.Future[None] | None:
        worker, local = self._admitted, message.id

        def refuse(code: str, problem: str) -> None:
            log.info("worker=%s function %s refused on the %s port: %s", worker.worker_id, local, self.module, code)
            self._core.send_error_notice(worker, code, problem, local)

        try:
            declared = FunctionDeclaration(local, message.description, _decoded(message.metadata))
        except (msgspec.DecodeError, RecursionError) as exc:
            refuse(errors.INVALID_MESSAGE, f"the metadata of function {local} cannot be decoded: {exc}")
            return None

        def apply(answer: FunctionDeclaration) -> None:
            function_id = answer.function_id
            if not isinstance(function_id, str) or not function_id:
                refuse(errors.FORBIDDEN, f"module {self.module} gave function {local} no id")
                return
            current = self._core.functions.get(function_id)
            if current is not None and current.owner is not worker:
                # Standing by would let this worker take the function over when its owner leaves.
                refuse(
                    errors.FUNCTION_NAMESPACE_CONFLICT,
                    f"function {function_id} is served by another worker (or the engine); "
                    "a worker of this port never stands by for it",
                )
                return
            self._local_ids[function_id] = local
            self._function_ids[local] = function_id
            rewritten = msgspec.structs.replace(
                message, id=function_id, description=answer.description, metadata=_raw(answer.metadata)
            )
            self._core.on_worker_message(worker, rewritten)

        return self._step(self._admitted_policy.function, declared, apply, refuse)

    def _on_unregister_function(self, message: UnregisterFunction) -> None:
        function_id = self._function_ids.pop(message.id, message.id)
        self._local_ids.pop(function_id, None)
        self._core.on_worker_message(self._admitted, msgspec.structs.replace(message, id=function_id))

    # --- triggers --------------------------------------------------------------------------------------

    def _on_register_trigger(self, message: RegisterTrigger) -> asyncio.Future[None] | None:
        worker, policy = self._admitted, self._admitted_policy

        def refuse(code: str, problem: str) -> None:
            log.info("worker=%s trigger %s refused on the %s port: %s", worker.worker_id, message.id, self.module, code)
            self._core.metrics.errors[code] += 1
            result = TriggerRegistrationResult(
                id=message.id,
                trigger_type=message.trigger_type,
                function_id=message.function_id,
                error=error_raw(code, problem),
            )
            worker.send_message(encode(result))

        try:
            declared = TriggerDeclaration(
                message.id,
                message.trigger_type,
                message.function_id,
                _decoded(message.config),
                _decoded(message.metadata),
            )
        except (msgspec.DecodeError, RecursionError) as exc:
            refuse(errors.INVALID_MESSAGE, f"trigger {message.id} cannot be decoded: {exc}")
            return None

        def apply(answer: TriggerDeclaration) -> None:
            builtin = self._core.triggers.builtin_type(answer.trigger_type)
            if builtin is not None and builtin.module is None:
                refuse(errors.FORBIDDEN, f"trigger type {answer.trigger_type} is not available on this port")
                return
            target = self._core.functions.get(answer.function_id)
            if not self._own(target):
                try:
                    policy.check_call(answer.function_id, _metadata(target))
                except FunctionError as refusal:
                    refuse(refusal.code, refusal.message)
                    return
            current = self._core.triggers.binding(answer.trigger_id)
            if current is not None and current.owner is not worker:
                refuse(errors.FORBIDDEN, f"trigger id {answer.trigger_id} is another worker's")
                return
            self._trigger_ids[message.id] = answer.trigger_id
            rewritten = msgspec.structs.replace(
                message,
                id=answer.trigger_id,
                trigger_type=answer.trigger_type,
                function_id=answer.function_id,
                config=_raw(answer.config),
                metadata=_raw(answer.metadata),
            )
            self._core.on_worker_message(worker, rewritten)

        return self._step(policy.trigger, declared, apply, refuse)

    def _on_unregister_trigger(self, message: UnregisterTrigger) -> None:
        trigger_id = self._trigger_ids.pop(message.id, message.id)
        self._core.on_worker_message(self._admitted, msgspec.structs.replace(message, id=trigger_id))

    def _on_register_trigger_type(self, message: RegisterTriggerType) -> asyncio.Future[None] | None:
        worker = self._admitted

        def refuse(code: str, problem: str) -> None:
            log.info(
                "worker=%s trigger type %s refused on the %s port: %s", worker.worker_id, message.id, self.module, code
            )
            self._core.send_error_notice(worker, code, f"trigger type {message.id}: {problem}")

        def apply(answer: TriggerTypeDeclaration) -> None:
            type_id = answer.trigger_type_id
            provider = self._core.triggers.provider_of(type_id)
            if provider is not None and provider is not worker:
                refuse(errors.FORBIDDEN, f"trigger type {type_id} is provided by another worker")
                return
            self._type_ids[message.id] = type_id
            rewritten = msgspec.structs.replace(message, id=type_id, description=answer.description)
            self._core.on_worker_message(worker, rewritten)

        declared = TriggerTypeDeclaration(message.id, message.description)
        return self._step(self._admitted_policy.trigger_type, declared, apply, refuse)

    def _on_unregister_trigger_type(self, message: UnregisterTriggerType) -> None:
        type_id = self._type_ids.pop(message.id, message.id)
        self._core.on_worker_message(self._admitted, msgspec.structs.replace(message, id=type_id))


def _action(message: InvokeFunction) -> dict[str, Any] | None:
    """A call's ``action`` as its JSON object (None without one)."""
    if message.action is None:
        return None
    return {key: value for key, value in msgspec.structs.asdict(message.action).items() if value is not None}
