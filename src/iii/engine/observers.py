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
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Final, Literal

import msgspec

from iii.engine.observer_records import (
    LOCAL_DISPATCH_FEATURE,
    NAMESPACE,
    Observer,
    ObserveRefused,
    Source,
    State,
    check_args,
    new_observer,
    speaks_observe,
)
from iii.engine.peers import Host
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
)

log = logging.getLogger("iii.engine")

MAX_OBSERVERS_PER_WORKER: Final = 10_000
"""Observers one worker may hold; past that ``observe`` is refused (``LIMIT_EXCEEDED``)."""
GRACE_S: Final = 30.0
"""How long the observers of a worker that left are kept for it to come back."""

Outgoing = list[tuple[Host, Message]]


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
            observer = new_observer(watcher, message, self._clock())
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
            source = Source.declared(function_id, host, descriptor)
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

    def _check_args(self, observer: Observer) -> None:
        source = self._sources.get(observer.source)
        if source is not None:
            check_args(observer, source)

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
