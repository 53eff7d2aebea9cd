"""Observing calls: what the engine does with the observer table (:mod:`iii.engine.observers`).

* A routed call of a function with active auto observers keeps what they need (:meth:`Observing.begin`); when it
  ends, each observer whose ``on`` and filters accept it activates its target (:meth:`Observing.end`).
* An owner's report of calls it ran in process, and of its ``obs.emit`` events (``invocationsobserved``), activates
  the observers it names (:meth:`Observing.report`).
* An owner's ``obs.call`` (an ``invokefunction`` with ``activation``) goes to the observer's target, and its
  result back to the owner (:meth:`Observing.owner_call`).

An activation is a call of the observer's target made by the engine: its payload is the envelope (or the input or
output, as the observer's ``deliver`` says), its metadata the observer's, its caller the engine on behalf of the
observed invocation, its ``observe_depth`` one more than that invocation's; a chain deeper than
:data:`MAX_OBSERVE_DEPTH` is dropped (``LOOP_GUARD``). At most ``max_in_flight``
activations of an observer run at once; the rest wait in order, up to :data:`MAX_WAITING`
and :data:`MAX_WAITING_BYTES` of payloads; past either they are dropped and counted.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

import msgspec

from iii.engine.observer_records import (
    CAPTURES,
    LOCAL_DISPATCH_FEATURE,
    NAMESPACE,
    OBSERVE_FEATURE,
    Observer,
)
from iii.engine.observers import ObserverTable, Outgoing, observe_result
from iii.engine.peers import Host
from iii.engine.triggers import BUILTIN_REFUSED
from iii.protocol.codec import decode_value, encode, encode_value
from iii.protocol.messages import (
    JSON_NULL,
    InvocationsObserved,
    InvokeFunction,
    Observe,
    ObserverAck,
    RegisterTrigger,
    Unobserve,
    is_null,
)

if TYPE_CHECKING:
    from iii.engine.core import Core
    from iii.engine.registry import FunctionEntry
    from iii.engine.router import PendingCall
    from iii.engine.worker_socket import WorkerConnection

log = logging.getLogger("iii.engine")

ENGINE_FEATURES: Final = (OBSERVE_FEATURE, LOCAL_DISPATCH_FEATURE)
"""What ``workerregistered.features`` adds for observe.v1."""
MAX_OBSERVE_DEPTH: Final = 8
"""Activations nested deeper than this (an observer's target calling what it observes) are dropped."""
MAX_WAITING: Final = 10_000
"""Activations an observer holds while ``max_in_flight`` are running; more are dropped and counted."""
MAX_WAITING_BYTES: Final = 64 * 1024 * 1024
"""The payload bytes those waiting activations may hold together."""
ENGINE_NAME: Final = "iii-engine"
"""The ``caller.worker_name`` of the calls the engine makes itself (activations)."""
_CALLER_FIELDS: Final = ("worker_id", "worker_name", "function_id", "invocation_id")


def stamp_caller(source: Host, asserted: msgspec.Raw) -> dict[str, Any]:
    """The ``caller`` a callee sees: the calling worker's id and name (stamped by the engine, never taken from
    the worker), and the handler the call was made from and its own caller, as the worker asserted them."""
    caller: dict[str, Any] = {"worker_id": source.worker_id}
    if source.name:
        caller["worker_name"] = source.name
    if not is_null(asserted):
        try:
            value = decode_value(asserted)
        except (msgspec.DecodeError, RecursionError):
            value = None
        if isinstance(value, dict):
            for key in ("function_id", "invocation_id"):
                if isinstance(value.get(key), str):
                    caller[key] = value[key]
            parent = value.get("parent")
            if isinstance(parent, dict):
                kept = {k: parent[k] for k in _CALLER_FIELDS if isinstance(parent.get(k), str)}
                if kept:
                    caller["parent"] = kept
    return caller


class ObservedCall:
    """What the observers of a routed call need when it ends, kept from its start."""

    __slots__ = ("caller", "depth", "input", "metadata", "observers", "started", "started_at_ms")

    def __init__(self, observers: list[Observer], document: dict[str, Any], depth: int) -> None:
        self.observers = observers
        self.input = document
        self.depth = depth
        self.started = time.monotonic()
        self.started_at_ms = int(time.time() * 1000)
        self.caller: Any = None
        self.metadata: Any = None


class _ActivationAnswer:
    """The caller of one activation: its result is not wanted, its end frees a place of ``max_in_flight``."""

    write_paused = False

    def __init__(self, observing: Observing, observer: Observer) -> None:
        self._observing = observing
        self._observer = observer

    def deliver_result(self, invocation_id: str, function_id: str, result: msgspec.Raw, error: msgspec.Raw) -> None:
        outcome = "ok" if is_null(error) else "failed"
        if outcome == "failed":
            self._observer.failures += 1
        self._observing.activations[outcome] += 1
        self._observing.finished(self._observer)


class Observing:
    """The engine's side of observe.v1: the observer table and the activations it causes."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.table = ObserverTable(is_registered=lambda function_id: core.functions.get(function_id) is not None)
        self.activations: Counter[str] = Counter()
        """Activations that ended, by outcome (``ok``, ``failed``)."""
        self.drops: Counter[str] = Counter()
        """Activations dropped, by reason (``LOOP_GUARD``, ``QUEUE_FULL``, ``TARGET_MISSING``)."""

    def _send(self, outgoing: Outgoing) -> None:
        for host, message in outgoing:
            host.send_message(encode(message))

    # --- messages from workers --------------------------------------------------------------------------------

    def on_observe(self, worker: Host, message: Observe) -> None:
        source_id = message.source.get("function_id")
        is_trigger_type = (
            isinstance(source_id, str)
            and self.core.functions.get(source_id) is None
            and self.core.triggers.is_provided(source_id)
            and self.table.get(message.id) is None
        )
        if is_trigger_type:
            self._send(self._bind(worker, message, str(source_id)))
        else:
            self._send(self.table.observe(worker, message))

    def on_unobserve(self, worker: Host, message: Unobserve) -> None:
        binding = self.core.triggers.binding(message.id)
        if binding is not None and binding.observed:
            self._send(self.core.triggers.unbind(worker, message.id))
        else:
            self._send(self.table.unobserve(worker, message.id))

    def _bind(self, worker: Host, message: Observe, trigger_type: str) -> Outgoing:
        """``observe`` of a trigger type: a binding to it, its ``args`` the binding's config. What only observers
        of functions have (filters, capture, limits) is refused rather than ignored."""
        source = message.source
        unsupported = [key for key in ("filters", "capture", "on", "deliver") if source.get(key) not in (None, {})]
        unsupported += [key for key in ("max_fires", "expires_in_ms", "max_in_flight") if getattr(message, key)]
        target = message.target.get("function_id")
        if unsupported or not isinstance(target, str) or not target:
            problem = (
                f"{trigger_type} is a trigger type: its observers take args and a target only, not "
                f"{', '.join(unsupported)}"
                if unsupported
                else "observe needs target.function_id"
            )
            return [(worker, observe_result(message.id, "error", "UNSUPPORTED", problem))]
        args = source.get("args")
        registration = RegisterTrigger(
            id=message.id,
            trigger_type=trigger_type,
            function_id=target,
            config=msgspec.Raw(encode_value(args)) if args is not None else JSON_NULL,
            metadata=message.metadata,
        )
        outgoing = self.core.triggers.bind(worker, registration, observed=True)
        binding = self.core.triggers.binding(message.id)
        if binding is None or binding.owner is not worker:
            problem = f"observer id {message.id} belongs to another worker"
            return [(worker, observe_result(message.id, "error", "OBSERVER_ID_TAKEN", problem))]
        # The answer says it all: the binding's own notice to its owner is not repeated.
        outgoing = [(host, m) for host, m in outgoing if host is not worker]
        status = binding.status()
        if status == "refused":
            problem = binding.refusal or "refused by the trigger type's provider"
            return [*outgoing, (worker, observe_result(message.id, "error", BUILTIN_REFUSED, problem))]
        return [*outgoing, (worker, observe_result(message.id, "active" if status == "active" else "pending"))]

    def on_ack(self, worker: Host, message: ObserverAck) -> None:
        self._send(self.table.acked(worker, message))

    def declared(self, worker: Host) -> None:
        """A worker said (``engine::workers::register``) that it speaks observe.v1."""
        self._send(self.table.owner_declared(worker))

    # --- functions and workers --------------------------------------------------------------------------------

    def function_registered(self, entry: FunctionEntry) -> None:
        host = entry.owner if entry.handler is None else None
        legacy_type = entry.observe.get("legacy") if isinstance(entry.observe, dict) else None
        if legacy_type is not None and host is not None and not self.core.triggers.is_provided(legacy_type):
            # Old workers' triggers waiting for a provider of the type this function takes over become its
            # observers, first, so that its owner learns them with the rest of its observer set.
            for binding in self.core.triggers.bindings():
                if binding.trigger_type == legacy_type and not binding.observed:
                    registration = binding.registration()
                    self._send(self.core.triggers.unbind(binding.owner, binding.binding_id))
                    self.bind_legacy(binding.owner, registration, entry.function_id)
        self._send(self.table.function_registered(entry.function_id, host, entry.observe))

    def bind_legacy(self, worker: Host, message: RegisterTrigger, function_id: str) -> None:
        """An old worker's ``registertrigger`` of the trigger type ``function_id`` took over: an observer of it,
        the trigger's config its args, the trigger's function its target (which receives the owner's events as
        they are, as it did from the type's provider)."""
        try:
            config = None if is_null(message.config) else decode_value(message.config)
        except (msgspec.DecodeError, RecursionError):
            config = None
        observe = Observe(
            id=message.id,
            source={"function_id": function_id, "args": config, "deliver": "input"},
            target={"function_id": message.function_id},
            metadata=message.metadata,
        )
        legacy = {"trigger_type": message.trigger_type, "config": config}
        self._send(self.table.observe(worker, observe, legacy))

    def unbind_legacy(self, worker: Host, binding_id: str) -> bool:
        """``unregistertrigger`` of a trigger that became an observer; False if ``binding_id`` is none of those."""
        observer = self.table.get(binding_id)
        if observer is None or observer.legacy is None:
            return False
        self._send(self.table.unobserve(worker, binding_id))
        return True

    def function_removed(self, function_id: str, host: Host | None) -> None:
        self._send(self.table.function_removed(function_id, host))

    def worker_left(self, worker: Host) -> None:
        self._send(self.table.worker_left(worker))

    def tick(self) -> None:
        self._send(self.table.tick())

    # --- calls ------------------------------------------------------------------------------------------------

    def begin(self, function_id: str, data: msgspec.Raw, depth: int | None) -> ObservedCall | None:
        """At the start of a routed call: what its active auto observers will need, or None if it has none."""
        observers = self.table.observed_by(function_id)
        if not observers:
            return None
        try:
            value = decode_value(data)
        except (msgspec.DecodeError, RecursionError):
            return None
        return ObservedCall(observers, value, depth or 0)

    def end(self, call: PendingCall, result: msgspec.Raw, error: msgspec.Raw) -> None:
        """A routed call with observers ended: activate those that accept it."""
        observed = call.observed
        assert isinstance(observed, ObservedCall)
        ok = is_null(error)
        document: dict[str, Any] = {"input": observed.input}
        if observed.caller is not None:
            document["caller"] = observed.caller
        if observed.metadata is not None:
            document["metadata"] = observed.metadata
        try:
            if ok:
                document["output"] = None if is_null(result) else decode_value(result)
            else:
                document["error"] = decode_value(error)
        except (msgspec.DecodeError, RecursionError):
            return
        duration_ms = (time.monotonic() - observed.started) * 1000
        for observer in observed.observers:
            if observer.state != "active" or not _on_accepts(observer.on, ok):
                continue
            if not observer.filter.matches(document):
                continue
            self._activate(
                observer,
                call.function_id,
                call.dispatch_id,
                "success" if ok else "error",
                document,
                observed.started_at_ms,
                duration_ms,
                observed.depth,
            )

    def report(self, worker: Host, message: InvocationsObserved) -> None:
        """An owner's report: each item activates the active observers it names."""
        for item in message.items:
            function_id, invocation_id = item.get("function_id"), item.get("invocation_id")
            matched = item.get("matched")
            if not isinstance(function_id, str) or not isinstance(invocation_id, str) or not isinstance(matched, list):
                continue
            status = "error" if item.get("status") == "error" else "success"
            document: dict[str, Any] = {part: item[part] for part in CAPTURES if part in item}
            started_at_ms = item.get("started_at_ms")
            duration_ms = item.get("duration_ms")
            for observer in self.table.reported(worker, function_id, matched):
                self._activate(
                    observer,
                    function_id,
                    invocation_id,
                    status,
                    document,
                    int(started_at_ms) if isinstance(started_at_ms, (int, float)) else 0,
                    float(duration_ms) if isinstance(duration_ms, (int, float)) else 0.0,
                    _depth(item.get("observe_depth")),
                )

    def owner_call(
        self, worker: WorkerConnection, message: InvokeFunction, caller_id: str | None, timeout_s: float
    ) -> tuple[str, str] | None:
        """``obs.call``: an owner hands a payload to one of its observers' target; the result comes back to it."""
        try:
            activation = decode_value(message.activation)
        except (msgspec.DecodeError, RecursionError):
            activation = None
        observer_id = activation.get("observer_id") if isinstance(activation, dict) else None
        observer = self.table.get(observer_id) if isinstance(observer_id, str) else None
        source = self.table.source(observer.source) if observer is not None else None
        if observer is None or source is None or source.host is not worker or observer.state != "active":
            return "OBSERVER_NOT_ACTIVE", f"observer {observer_id} is not an active observer of a function of yours"
        depth = _depth(message.observe_depth) + 1
        if depth > MAX_OBSERVE_DEPTH:
            self._drop(observer, "LOOP_GUARD")
            return "LOOP_GUARD", f"observe chain deeper than {MAX_OBSERVE_DEPTH} hops"
        activation_id = str(uuid.uuid4())
        problem = self.core.calls.start(
            observer.target,
            message.data,
            caller=worker if caller_id is not None else None,
            caller_invocation_id=caller_id,
            timeout_s=timeout_s,
            source=worker,
            metadata=observer.metadata,
            traceparent=message.traceparent,
            baggage=message.baggage,
            asserted_caller=message.caller,
            observe_depth=depth,
            activation=_activation_raw(observer.observer_id, activation_id),
        )
        if problem is None:
            self._send(self.table.fired(observer))
        return problem

    # --- activations ------------------------------------------------------------------------------------------

    def _activate(
        self,
        observer: Observer,
        function_id: str,
        invocation_id: str,
        status: str,
        document: dict[str, Any],
        started_at_ms: int,
        duration_ms: float,
        depth: int,
    ) -> None:
        depth += 1
        if depth > MAX_OBSERVE_DEPTH:
            self._drop(observer, "LOOP_GUARD")
            return
        activation_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "observer_id": observer.observer_id,
            "activation_id": activation_id,
            "function_id": function_id,
            "namespace": NAMESPACE,
            "invocation_id": invocation_id,
            "status": status,
        }
        for part in observer.capture:
            if part in document:
                envelope[part] = document[part]
        envelope["started_at_ms"] = started_at_ms
        envelope["duration_ms"] = duration_ms
        payload = envelope if observer.deliver == "envelope" else document.get(observer.deliver)
        data = msgspec.Raw(encode_value(payload))
        caller = {"worker_name": ENGINE_NAME, "function_id": function_id, "invocation_id": invocation_id}

        def start() -> None:
            problem = self.core.calls.start(
                observer.target,
                data,
                caller=_ActivationAnswer(self, observer),
                caller_invocation_id=activation_id,
                metadata=observer.metadata,
                caller_info=caller,
                observe_depth=depth,
                activation=_activation_raw(observer.observer_id, activation_id),
            )
            if problem is not None:
                self._drop(observer, "TARGET_MISSING")
                self.finished(observer)

        must_wait = bool(observer.waiting) or observer.in_flight >= observer.max_in_flight
        if must_wait and (
            len(observer.waiting) >= MAX_WAITING or observer.waiting_bytes + len(data) > MAX_WAITING_BYTES
        ):
            self._drop(observer, "QUEUE_FULL")
            return
        observer.waiting.append((start, len(data)))
        observer.waiting_bytes += len(data)
        self._send(self.table.fired(observer))
        self._pump(observer)

    def _pump(self, observer: Observer) -> None:
        """Start waiting activations while fewer than ``max_in_flight`` run. A loop, not recursion: an activation
        can end before its start returns (a target served inside the engine, a target that is gone)."""
        if observer.pumping:
            return
        observer.pumping = True
        try:
            while observer.waiting and observer.in_flight < observer.max_in_flight:
                start, size = observer.waiting.popleft()
                observer.waiting_bytes -= size
                observer.in_flight += 1
                start()
        finally:
            observer.pumping = False

    def _drop(self, observer: Observer, reason: str) -> None:
        observer.dropped[reason] += 1
        self.drops[reason] += 1

    def finished(self, observer: Observer) -> None:
        """One activation of ``observer`` ended: the next waiting one starts."""
        observer.in_flight -= 1
        self._pump(observer)


def _on_accepts(on: str, ok: bool) -> bool:
    return on == "complete" or (on == "success") == ok


def _depth(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _activation_raw(observer_id: str, activation_id: str) -> msgspec.Raw:
    return msgspec.Raw(encode_value({"observer_id": observer_id, "activation_id": activation_id}))
