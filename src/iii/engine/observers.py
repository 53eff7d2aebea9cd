"""Observers (observe.v1): a target function bound to the calls of a source function. No sockets.

``iii.observe(source, target)`` asks the engine to call ``target`` for every call of ``source`` that passes the
observer's filters (*auto* delivery: the engine sees the calls it routes, and the source's owner reports the calls
it runs in process), or for every event the source's owner hands to it (*owner* delivery: ``obs.emit`` and
``obs.call``, the way a cron or HTTP function serves its subscribers). It is the same binding as
``register_trigger``: a function bound to a source of events, kept by the engine, handed to whoever fires the
events, and answered with whether it was accepted. A trigger type is a source fired by its provider; an
observable function is a source fired by its own calls or by its owner.

The state of an observer is derived in one place (:meth:`ObserverTable._derived_state`):

============================================  =================================================
what holds                                     state
============================================  =================================================
its observing worker left (grace period)       ``suspended``
source or target not registered                ``pending`` (never active yet) / ``suspended``
the source's owner has not accepted it yet     ``pending`` / ``suspended``
otherwise                                      ``active``
============================================  =================================================

``error`` (refused: by the engine, by the owner's hook) and ``disposed`` (``unobserve``, ``max_fires``,
``expires_in_ms``, the grace period ran out) are final: the observer leaves the table.

The owner of an observed function learns its observer set when the function is registered
(``functionregistered``), and each change (``observeradded`` / ``observerremoved``), numbered by a revision per
function; it accepts each added observer with ``observerack``. Owners whose SDK does not speak observe.v1 are not
asked: their observers are accepted at once, and only their routed calls can activate them.

State changes are plain methods returning the messages to send as (host, message) pairs, as in
:mod:`iii.engine.triggers`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import jsonschema
import msgspec

from iii.engine.filters import Filter, FilterError, compile_filter
from iii.engine.peers import Host
from iii.protocol.codec import decode_value, detached
from iii.protocol.messages import (
    ErrorBody,
    FunctionRegistered,
    Message,
    Observe,
    ObserverAck,
    ObserverAdded,
    ObserveResult,
    ObserverRemoved,
    ObserverStateChanged,
    TriggerRegistrationResult,
    is_null,
)

log = logging.getLogger("iii.engine")

OBSERVE_FEATURE: Final = "observe.v1"
LOCAL_DISPATCH_FEATURE: Final = "local-dispatch.v1"
NAMESPACE: Final = "default"
"""The one namespace this engine serves."""

MAX_OBSERVE_DEPTH: Final = 8
"""Activations nested deeper than this (an observer's target calling what it observes) are dropped."""
DEFAULT_MAX_IN_FLIGHT: Final = 64
MAX_WAITING: Final = 10_000
"""Activations an observer holds while ``max_in_flight`` are running; more are dropped and counted."""
MAX_WAITING_BYTES: Final = 64 * 1024 * 1024
"""The payload bytes those waiting activations may hold together."""
MAX_OBSERVERS_PER_WORKER: Final = 10_000
"""Observers one worker may hold; past that ``observe`` is refused (``LIMIT_EXCEEDED``)."""
GRACE_S: Final = 30.0
"""How long the observers of a worker that left are kept for it to come back."""

CAPTURES: Final = ("input", "output", "error", "caller", "metadata")
DEFAULT_CAPTURE: Final = ("input", "output", "caller")
ON_VALUES: Final = frozenset({"success", "error", "complete"})
DELIVER_VALUES: Final = frozenset({"envelope", "input", "output"})

State = Literal["pending", "active", "suspended", "error", "disposed"]
Outgoing = list[tuple[Host, Message]]


def speaks_observe(host: Host) -> bool:
    return OBSERVE_FEATURE in host.features


class ObserveRefused(Exception):
    """An observer (or an observe descriptor) the engine will not take, with the protocol's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class Source:
    """An observable function as its owner registered it."""

    function_id: str
    host: Host
    delivery: str = "auto"
    args_validator: Any = None
    """A jsonschema validator of the observers' ``args`` (owner delivery only), or None."""
    allow: bool = True
    legacy_trigger_type: str | None = None
    told: bool = False
    """Its owner speaks observe.v1 and was sent its observer set."""


@dataclass(eq=False)
class Observer:
    observer_id: str
    watcher: Host
    """The worker that made it (and replays it after a reconnect)."""
    source: str
    target: str
    args: dict[str, Any]
    filter: Filter
    capture: tuple[str, ...]
    on: str
    deliver: str
    metadata: msgspec.Raw
    max_fires: int | None
    expires_at: float | None
    max_in_flight: int
    state: State = "pending"
    reason: dict[str, str] | None = None
    ever_active: bool = False
    accepted: bool = False
    """The source's owner accepted it (or does not take part: it does not speak observe.v1)."""
    watcher_left_at: float | None = None
    fires: int = 0
    failures: int = 0
    """Activations whose target answered an error."""
    in_flight: int = 0
    waiting: deque[tuple[Callable[[], None], int]] = field(default_factory=deque)
    """Activations held back by ``max_in_flight``: how to start each, and its payload's size."""
    waiting_bytes: int = 0
    pumping: bool = False
    """Waiting activations are being started (see ``Observing._pump``)."""
    dropped: Counter[str] = field(default_factory=Counter)
    legacy: dict[str, Any] | None = None
    """An old worker's ``registertrigger`` this observer stands for: ``{trigger_type, config}``."""

    def owner_view(self) -> dict[str, Any]:
        """The observer as the source's owner sees it: never its metadata, policy or watcher."""
        view = {
            "id": self.observer_id,
            "args": self.args,
            "filters": self.filter.normal,
            "target": self.target,
            "capture": list(self.capture),
            "on": self.on,
        }
        if self.legacy is not None:
            view["legacy"] = self.legacy
        return view

    def describe(self) -> dict[str, Any]:
        """The observer in full, for ``engine::observers::*`` and the console."""
        return {
            "id": self.observer_id,
            "state": self.state,
            "reason": self.reason,
            "source": {"function_id": self.source, "namespace": NAMESPACE, "args": self.args},
            "target": {"function_id": self.target, "namespace": NAMESPACE},
            "filters": self.filter.normal,
            "capture": list(self.capture),
            "on": self.on,
            "deliver": self.deliver,
            "worker_id": self.watcher.worker_id,
            "worker_name": self.watcher.name,
            "max_fires": self.max_fires,
            "max_in_flight": self.max_in_flight,
            "fires": self.fires,
            "failures": self.failures,
            "in_flight": self.in_flight,
            "waiting": len(self.waiting),
            "dropped": dict(self.dropped),
        }


def parse_descriptor(function_id: str, raw: msgspec.Raw) -> dict[str, Any] | None:
    """``registerfunction.observe`` checked: ``{delivery, args_format, allow, legacy_trigger_type}`` or None;
    :class:`ObserveRefused` (``INVALID_OBSERVE_DESCRIPTOR``) when it is not one."""
    if is_null(raw):
        return None

    def refuse(problem: str) -> ObserveRefused:
        return ObserveRefused("INVALID_OBSERVE_DESCRIPTOR", f"function {function_id}: observe.{problem}")

    try:
        value = decode_value(raw)
    except (msgspec.DecodeError, RecursionError):
        raise refuse("descriptor is not JSON") from None
    if not isinstance(value, dict):
        raise ObserveRefused("INVALID_OBSERVE_DESCRIPTOR", f"function {function_id}: observe must be an object")
    delivery = value.get("delivery") or "auto"
    if delivery not in ("auto", "owner"):
        raise refuse(f"delivery must be 'auto' or 'owner', not {delivery!r}")
    args_format = value.get("args_format")
    if args_format is not None:
        if delivery != "owner":
            raise refuse("args_format needs delivery 'owner' (an auto-delivered function takes no args)")
        try:
            jsonschema.validators.validator_for(args_format).check_schema(args_format)
        except jsonschema.SchemaError as exc:
            raise refuse(f"args_format is not a JSON Schema: {exc.message}") from None
    allow = value.get("allow")
    if allow is not None and not isinstance(allow, bool):
        raise refuse("allow must be a boolean")
    legacy = value.get("legacy_trigger_type")
    if legacy is not None and not isinstance(legacy, str):
        raise refuse("legacy_trigger_type must be a string")
    return {"delivery": delivery, "args_format": args_format, "allow": allow is not False, "legacy": legacy}


class ObserverTable:
    """The observers of one engine and the observable functions they bind to (see the module docstring)."""

    def __init__(self, is_registered: Callable[[str], bool], clock: Callable[[], float] = time.monotonic) -> None:
        self._is_registered = is_registered
        self._clock = clock
        self._observers: dict[str, Observer] = {}
        self._by_source: dict[str, dict[str, Observer]] = {}
        self.observed_functions = self._by_source
        """The ids of the functions that have observers (a mapping: test membership only)."""
        self._by_target: dict[str, dict[str, Observer]] = {}
        self._sources: dict[str, Source] = {}
        self._per_watcher: Counter[Host] = Counter()
        self._revisions: dict[str, int] = {}
        """The last revision of each function's observer set; never reset, so owners can order what they get."""

    def __len__(self) -> int:
        return len(self._observers)

    def __iter__(self) -> Iterator[Observer]:
        return iter(list(self._observers.values()))

    def get(self, observer_id: str) -> Observer | None:
        return self._observers.get(observer_id)

    def source(self, function_id: str) -> Source | None:
        return self._sources.get(function_id)

    def legacy_source(self, trigger_type: str) -> Source | None:
        """The function that took over ``trigger_type`` (its observe descriptor's ``legacy_trigger_type``)."""
        for source in self._sources.values():
            if source.legacy_trigger_type == trigger_type:
                return source
        return None

    def observed_by(self, function_id: str) -> list[Observer]:
        """The active observers of ``function_id`` that the engine delivers to itself (auto delivery)."""
        observers = self._by_source.get(function_id)
        if not observers:
            return []
        source = self._sources.get(function_id)
        if source is None or source.delivery != "auto":
            return []
        return [o for o in observers.values() if o.state == "active"]

    # --- the observing side ---------------------------------------------------------------------------------

    def observe(self, watcher: Host, message: Observe, legacy: dict[str, Any] | None = None) -> Outgoing:
        """Create an observer, or take back one replayed after a reconnect; answered with ``observeresult``.

        ``legacy``: the observer stands for an old worker's ``registertrigger`` (``{trigger_type, config}``) of a
        trigger type that an owner-delivered function took over (its ``legacy_trigger_type``); its watcher is told
        only of a refusal, with ``triggerregistrationresult``.
        """
        existing = self._observers.get(message.id)
        if existing is not None:
            return self._replayed(existing, watcher)
        try:
            if self._per_watcher[watcher] >= MAX_OBSERVERS_PER_WORKER:
                raise ObserveRefused("LIMIT_EXCEEDED", f"a worker may hold {MAX_OBSERVERS_PER_WORKER} observers")
            observer = self._new_observer(watcher, message)
            observer.legacy = legacy
            self._check_args(observer)
        except ObserveRefused as refused:
            log.info("worker=%s observer %s refused: %s: %s", watcher.worker_id, message.id, refused.code, refused)
            if legacy is not None:
                target = str(message.target.get("function_id") or "")
                return [(watcher, _trigger_refusal(message.id, legacy, target, refused.code, refused.message))]
            return [(watcher, observe_result(message.id, "error", refused.code, refused.message))]
        self._observers[observer.observer_id] = observer
        self._per_watcher[watcher] += 1
        self._by_source.setdefault(observer.source, {})[observer.observer_id] = observer
        self._by_target.setdefault(observer.target, {})[observer.observer_id] = observer
        outgoing: Outgoing = []
        source = self._sources.get(observer.source)
        if source is not None:
            outgoing.extend(self._offer(source, observer))
        observer.state = self._derived_state(observer)
        observer.ever_active = observer.state == "active"
        log.info(
            "worker=%s observes %s with %s (observer %s): %s",
            watcher.worker_id,
            observer.source,
            observer.target,
            observer.observer_id,
            observer.state,
        )
        outgoing.extend(self._tell_watcher(observer, result=True))
        return outgoing

    def _replayed(self, observer: Observer, watcher: Host) -> Outgoing:
        if observer.watcher is not watcher:
            came_back = observer.watcher_left_at is not None and observer.watcher.name == watcher.name
            if not came_back:
                problem = f"observer id {observer.observer_id} belongs to another worker"
                return [(watcher, observe_result(observer.observer_id, "error", "OBSERVER_ID_TAKEN", problem))]
            self._move(observer, watcher)
            observer.watcher_left_at = None
        observer.state = self._derived_state(observer)
        observer.ever_active = observer.ever_active or observer.state == "active"
        return self._tell_watcher(observer, result=True)

    def unobserve(self, watcher: Host, observer_id: str) -> Outgoing:
        observer = self._observers.get(observer_id)
        if observer is None or observer.watcher is not watcher:
            return []
        return self._end(observer, "disposed", "UNOBSERVED", "disposed by the observing worker", tell_watcher=False)

    def worker_left(self, worker: Host) -> Outgoing:
        """A worker left: its observers wait :data:`GRACE_S` for it to come back (suspended)."""
        outgoing: Outgoing = []
        now = self._clock()
        for observer in list(self._observers.values()):
            if observer.watcher is worker:
                observer.watcher_left_at = now
                outgoing.extend(self._settle(observer))
        return outgoing

    def transfer(self, old: Host, new: Host) -> None:
        """A reattaching worker takes over the old connection's observers and observed functions."""
        for observer in self._observers.values():
            if observer.watcher is old:
                self._move(observer, new)
        for source in self._sources.values():
            if source.host is old:
                source.host = new

    def tick(self) -> Outgoing:
        """Dispose the observers whose lease ran out (``EXPIRED``) or whose worker did not come back."""
        now = self._clock()
        outgoing: Outgoing = []
        for observer in list(self._observers.values()):
            if observer.expires_at is not None and now >= observer.expires_at:
                outgoing.extend(self._end(observer, "disposed", "EXPIRED", "expires_in_ms ran out"))
            elif observer.watcher_left_at is not None and now - observer.watcher_left_at >= GRACE_S:
                outgoing.extend(self._end(observer, "disposed", "WORKER_GONE", "its worker did not come back"))
        return outgoing

    def fired(self, observer: Observer) -> Outgoing:
        """Count one activation; the last one ``max_fires`` allows disposes the observer (``MAX_FIRES``)."""
        observer.fires += 1
        if observer.max_fires is not None and observer.fires >= observer.max_fires:
            return self._end(observer, "disposed", "MAX_FIRES", f"fired {observer.fires} time(s), its max_fires")
        return []

    # --- the observed side ------------------------------------------------------------------------------------

    def function_registered(self, function_id: str, host: Host | None, descriptor: dict[str, Any] | None) -> Outgoing:
        """``function_id`` is now served (by worker ``host``, or inside the engine when None): its observers and
        the observers targeting it are settled; its owner is told its observer set if it speaks observe.v1."""
        outgoing: Outgoing = []
        if host is not None:
            source = Source(function_id, host)
            if descriptor is not None:
                source.delivery = descriptor["delivery"]
                source.allow = descriptor["allow"]
                source.legacy_trigger_type = descriptor["legacy"]
                if descriptor["args_format"] is not None:
                    schema = descriptor["args_format"]
                    source.args_validator = jsonschema.validators.validator_for(schema)(schema)
            self._sources[function_id] = source
            for observer in list(self._by_source.get(function_id, {}).values()):
                try:
                    self._check_args(observer)
                except ObserveRefused as refused:
                    outgoing.extend(self._end(observer, "error", refused.code, refused.message, tell_owner=False))
                    continue
                observer.accepted = not speaks_observe(host)
            if speaks_observe(host):
                outgoing.extend(self.tell_owner(source))
        outgoing.extend(self._settle_all(function_id))
        return outgoing

    def function_removed(self, function_id: str, host: Host | None) -> Outgoing:
        """``function_id`` is no longer served by ``host``: its observers and those targeting it wait."""
        source = self._sources.get(function_id)
        if source is not None and source.host is host:
            del self._sources[function_id]
            for observer in self._by_source.get(function_id, {}).values():
                observer.accepted = False
        return self._settle_all(function_id)

    def owner_declared(self, host: Host) -> Outgoing:
        """``host`` said it speaks observe.v1 (after registering functions): tell it their observer sets."""
        outgoing: Outgoing = []
        for source in list(self._sources.values()):
            if source.host is host and not source.told:
                outgoing.extend(self.tell_owner(source))
        return outgoing

    def tell_owner(self, source: Source) -> Outgoing:
        """Send the owner of ``source`` its whole observer set (``functionregistered``)."""
        source.told = True
        observers = [o.owner_view() for o in self._by_source.get(source.function_id, {}).values()]
        message = FunctionRegistered(
            id=source.function_id,
            namespace=NAMESPACE,
            revision=self._next_revision(source.function_id),
            local_dispatch=LOCAL_DISPATCH_FEATURE in source.host.features,
            observers=observers,
        )
        return [(source.host, message)]

    def acked(self, host: Host, message: ObserverAck) -> Outgoing:
        """The owner accepted an observer (it becomes active), or refused it (``error``, with the owner's code)."""
        source = self._sources.get(message.function_id)
        observer = self._by_source.get(message.function_id, {}).get(message.id)
        if source is None or source.host is not host or observer is None:
            return []
        if message.error is not None:
            code = str(message.error.get("code") or "OBSERVE_REJECTED")
            text = str(message.error.get("message") or f"refused by the owner of {message.function_id}")
            return self._end(observer, "error", code, text, tell_owner=False)
        observer.accepted = True
        return self._settle(observer)

    def reported(self, host: Host, function_id: str, observer_ids: list[Any]) -> list[Observer]:
        """The active observers an owner's report names, of a function that owner serves."""
        source = self._sources.get(function_id)
        observers = self._by_source.get(function_id)
        if source is None or source.host is not host or not observers:
            return []
        found = (observers.get(i) for i in observer_ids if isinstance(i, str))
        return [o for o in found if o is not None and o.state == "active"]

    # --- internals ----------------------------------------------------------------------------------------

    def _new_observer(self, watcher: Host, message: Observe) -> Observer:
        source, target = message.source, message.target
        source_id, target_id = source.get("function_id"), target.get("function_id")
        if not isinstance(source_id, str) or not source_id or not isinstance(target_id, str) or not target_id:
            raise ObserveRefused("INVALID_OBSERVER", "observe needs source.function_id and target.function_id")
        for side in (source, target):
            namespace = side.get("namespace")
            if namespace not in (None, NAMESPACE):
                raise ObserveRefused("NAMESPACE_NOT_FOUND", f"namespace {namespace!r} does not exist on this engine")
        if source_id == target_id:
            raise ObserveRefused("SELF_TARGET", f"{source_id} cannot observe itself")
        try:
            observe_filter = compile_filter(source.get("filters"))
        except FilterError as exc:
            raise ObserveRefused(FilterError.code, str(exc)) from None
        args = source.get("args")
        if args is not None and not isinstance(args, dict):
            raise ObserveRefused("INVALID_ARGS", "source.args must be an object")
        capture = source.get("capture")
        if capture is None:
            capture = list(DEFAULT_CAPTURE)
        if not isinstance(capture, list) or any(c not in CAPTURES for c in capture):
            raise ObserveRefused("INVALID_OBSERVER", f"source.capture holds only {', '.join(CAPTURES)}")
        on = source.get("on") or "success"
        deliver = source.get("deliver") or "envelope"
        if on not in ON_VALUES:
            raise ObserveRefused("INVALID_OBSERVER", f"source.on is success, error or complete, not {on!r}")
        if deliver not in DELIVER_VALUES:
            raise ObserveRefused("INVALID_OBSERVER", f"source.deliver is envelope, input or output, not {deliver!r}")
        for name in ("max_fires", "expires_in_ms", "max_in_flight"):
            value = getattr(message, name)
            if value is not None and value <= 0:
                raise ObserveRefused("INVALID_OBSERVER", f"{name} must be positive")
        expires_at = None if message.expires_in_ms is None else self._clock() + message.expires_in_ms / 1000
        return Observer(
            observer_id=message.id,
            watcher=watcher,
            source=source_id,
            target=target_id,
            args=args or {},
            filter=observe_filter,
            capture=tuple(dict.fromkeys(capture)),
            on=on,
            deliver=deliver,
            metadata=detached(message.metadata),  # the message points into the socket's receive buffer
            max_fires=message.max_fires,
            expires_at=expires_at,
            max_in_flight=message.max_in_flight or DEFAULT_MAX_IN_FLIGHT,
        )

    def _check_args(self, observer: Observer) -> None:
        """The observer's args against its source, once the source is registered (``INVALID_ARGS``)."""
        source = self._sources.get(observer.source)
        if source is None:
            return
        if not source.allow:
            raise ObserveRefused("NOT_OBSERVABLE", f"{observer.source} does not allow observers")
        if source.delivery == "auto":
            if observer.args:
                problem = f"{observer.source} is auto-delivered: it takes no args"
                raise ObserveRefused("INVALID_ARGS", problem)
            return
        if source.args_validator is not None:
            error = jsonschema.exceptions.best_match(source.args_validator.iter_errors(observer.args))
            if error is not None:
                raise ObserveRefused("INVALID_ARGS", f"args of {observer.source}: {error.message}")

    def _offer(self, source: Source, observer: Observer) -> Outgoing:
        """A new observer of a registered source: its owner is asked to accept it, if it takes part."""
        if not speaks_observe(source.host):
            observer.accepted = True
            return []
        if not source.told:
            return []  # it gets the whole set when it declares observe.v1
        added = ObserverAdded(
            function_id=source.function_id,
            namespace=NAMESPACE,
            revision=self._next_revision(source.function_id),
            observer=observer.owner_view(),
        )
        return [(source.host, added)]

    def _derived_state(self, observer: Observer) -> State:
        waiting: State = "suspended" if observer.ever_active else "pending"
        if observer.watcher_left_at is not None:
            return "suspended"
        if observer.source not in self._sources or not self._is_registered(observer.target):
            return waiting
        if not observer.accepted:
            return waiting
        return "active"

    def _settle(self, observer: Observer) -> Outgoing:
        """Recompute an observer's state; its watcher is told of a change."""
        state = self._derived_state(observer)
        if state == observer.state:
            return []
        observer.state = state
        observer.ever_active = observer.ever_active or state == "active"
        if observer.watcher_left_at is not None:
            return []
        return self._tell_watcher(observer)

    def _settle_all(self, function_id: str) -> Outgoing:
        outgoing: Outgoing = []
        for index in (self._by_source, self._by_target):
            for observer in list(index.get(function_id, {}).values()):
                outgoing.extend(self._settle(observer))
        return outgoing

    def _end(
        self,
        observer: Observer,
        state: Literal["error", "disposed"],
        code: str,
        message: str,
        *,
        tell_watcher: bool = True,
        tell_owner: bool = True,
    ) -> Outgoing:
        """The observer leaves the table (``error`` or ``disposed``); its owner and watcher are told."""
        if self._observers.pop(observer.observer_id, None) is None:
            return []
        self._per_watcher[observer.watcher] -= 1
        if not self._per_watcher[observer.watcher]:
            del self._per_watcher[observer.watcher]
        self._by_source.get(observer.source, {}).pop(observer.observer_id, None)
        self._by_target.get(observer.target, {}).pop(observer.observer_id, None)
        observer.state, observer.reason = state, {"code": code, "message": message}
        # Activations it already accepted (queued behind max_in_flight) are still delivered.
        log.info("observer %s of %s is %s: %s: %s", observer.observer_id, observer.source, state, code, message)
        outgoing: Outgoing = []
        source = self._sources.get(observer.source)
        if tell_owner and source is not None and source.told:
            removed = ObserverRemoved(
                function_id=source.function_id,
                namespace=NAMESPACE,
                revision=self._next_revision(source.function_id),
                id=observer.observer_id,
            )
            outgoing.append((source.host, removed))
        if tell_watcher and observer.watcher_left_at is None:
            outgoing.extend(self._tell_watcher(observer))
        return outgoing

    @staticmethod
    def _tell_watcher(observer: Observer, *, result: bool = False) -> Outgoing:
        """The watcher learns the observer's state: ``observeresult`` (answering its ``observe``) or
        ``observerstatechanged``; an old worker's legacy trigger only of a refusal."""
        reason = observer.reason or {}
        code, text = reason.get("code"), reason.get("message", "")
        if observer.legacy is not None:
            if observer.state != "error":
                return []
            refusal = _trigger_refusal(observer.observer_id, observer.legacy, observer.target, str(code), text)
            return [(observer.watcher, refusal)]
        if result:
            return [(observer.watcher, observe_result(observer.observer_id, observer.state, code, text))]
        body = ErrorBody(code=code, message=text) if code is not None else None
        return [(observer.watcher, ObserverStateChanged(observer.observer_id, observer.state, body, observer.fires))]

    def _move(self, observer: Observer, watcher: Host) -> None:
        """Give ``observer`` to another connection of its worker (a reconnect, a reattach)."""
        self._per_watcher[observer.watcher] -= 1
        if not self._per_watcher[observer.watcher]:
            del self._per_watcher[observer.watcher]
        observer.watcher = watcher
        self._per_watcher[watcher] += 1

    def _next_revision(self, function_id: str) -> int:
        revision = self._revisions.get(function_id, 0) + 1
        self._revisions[function_id] = revision
        return revision


def _trigger_refusal(
    binding_id: str, legacy: dict[str, Any], function_id: str, code: str, message: str
) -> TriggerRegistrationResult:
    error = msgspec.Raw(msgspec.json.encode({"code": code, "message": message}))
    return TriggerRegistrationResult(
        id=binding_id, trigger_type=str(legacy.get("trigger_type", "")), function_id=function_id, error=error
    )


def observe_result(observer_id: str, state: str, code: str | None = None, message: str = "") -> ObserveResult:
    error = ErrorBody(code=code, message=message) if code is not None else None
    return ObserveResult(id=observer_id, state=state, error=error)
