"""Invocations in flight: who called, whom the call went to, and until when it may wait.

The engine gives every dispatched call an id of its own (the *dispatch id*), so callers cannot collide
with each other and a result is accepted only from the host the call went to. The caller's own id is kept
and put back on the result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from iii.engine.deadlines import Deadlines
from iii.engine.peers import Caller, Host
from iii.engine.spans import OpenSpan


class PendingCall:
    """One call dispatched to a host and not yet answered."""

    __slots__ = (
        "caller",
        "caller_invocation_id",
        "deadline_slot",
        "dispatch_id",
        "function_id",
        "observed",
        "span",
        "started_at",
        "target",
    )

    def __init__(
        self,
        dispatch_id: str,
        function_id: str,
        target: Host,
        caller: Caller | None,
        caller_invocation_id: str | None,
        started_at: float,
    ) -> None:
        self.dispatch_id = dispatch_id
        self.function_id = function_id
        self.target = target
        self.caller = caller
        self.caller_invocation_id = caller_invocation_id
        self.started_at = started_at
        self.deadline_slot = 0.0
        self.observed: object | None = None
        """What its observers need of it when it ends (:mod:`iii.engine.observing`), if it has any."""
        self.span: OpenSpan | None = None
        """Its ``call <fn>`` span, when the engine records spans (:mod:`iii.engine.spans`)."""


class DispatchIds:
    """Unique, UUID-shaped ids: a random 80-bit prefix per engine and a 48-bit counter.

    They are not secret (results are checked against the target), only unique and cheap to make.
    """

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        hex_prefix = os.urandom(10).hex()
        self._prefix = f"{hex_prefix[:8]}-{hex_prefix[8:12]}-{hex_prefix[12:16]}-{hex_prefix[16:20]}-"
        self._counter = 0

    def next(self) -> str:
        self._counter += 1
        return f"{self._prefix}{self._counter:012x}"


class InvocationRouter:
    """The table of pending calls, indexed by dispatch id, by target and by caller."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ids = DispatchIds()
        self._pending: dict[str, PendingCall] = {}
        self._by_target: dict[Host, set[str]] = {}
        self._by_caller: dict[Caller, set[str]] = {}
        self._deadlines: Deadlines[str] = Deadlines()

    def __len__(self) -> int:
        return len(self._pending)

    def pending_for_target(self, target: Host) -> int:
        return len(self._by_target.get(target, ()))

    def pending_for_caller(self, caller: Caller) -> int:
        return len(self._by_caller.get(caller, ()))

    def start(
        self,
        function_id: str,
        target: Host,
        caller: Caller | None,
        caller_invocation_id: str | None,
        timeout_s: float,
    ) -> PendingCall:
        """Record a call about to be sent to ``target``; it times out after ``timeout_s``."""
        now = self._clock()
        call = PendingCall(self._ids.next(), function_id, target, caller, caller_invocation_id, now)
        self._pending[call.dispatch_id] = call
        targets = self._by_target.get(target)
        if targets is None:
            targets = self._by_target[target] = set()
        targets.add(call.dispatch_id)
        if caller is not None:
            callers = self._by_caller.get(caller)
            if callers is None:
                callers = self._by_caller[caller] = set()
            callers.add(call.dispatch_id)
        call.deadline_slot = self._deadlines.add(call.dispatch_id, now, timeout_s)
        return call

    def complete(self, dispatch_id: str, sender: Host) -> PendingCall | None:
        """Take the call ``dispatch_id`` if ``sender`` is the host it was sent to; else ``None``."""
        call = self._pending.get(dispatch_id)
        if call is None or call.target is not sender:
            return None
        self._forget(call)
        return call

    def take_target(self, target: Host) -> list[PendingCall]:
        """Remove and return every call sent to ``target`` (it disconnected)."""
        calls = [self._pending[d] for d in self._by_target.get(target, ())]
        for call in calls:
            self._forget(call)
        self._by_target.pop(target, None)
        return calls

    def drop_caller(self, caller: Caller) -> list[PendingCall]:
        """Stop waiting on behalf of ``caller`` (it disconnected); the hosts' late results are dropped. Returns
        the calls dropped."""
        calls = [self._pending[d] for d in self._by_caller.pop(caller, ())]
        for call in calls:
            self._forget(call)
        return calls

    def retarget(self, old: Host, new: Host) -> None:
        """Move calls sent to ``old`` to ``new`` (a reattaching worker will answer them there)."""
        ids = self._by_target.pop(old, set())
        for dispatch_id in ids:
            self._pending[dispatch_id].target = new
        if ids:
            self._by_target.setdefault(new, set()).update(ids)

    def recall(self, old: Caller, new: Caller) -> None:
        """Deliver results of calls made by ``old`` to ``new`` (a reattaching worker)."""
        ids = self._by_caller.pop(old, set())
        for dispatch_id in ids:
            self._pending[dispatch_id].caller = new
        if ids:
            self._by_caller.setdefault(new, set()).update(ids)

    def take_expired(self) -> list[PendingCall]:
        """Remove and return the calls whose deadline has passed."""
        calls = []
        for dispatch_id in self._deadlines.pop_expired(self._clock()):
            call = self._pending.get(dispatch_id)
            if call is not None:
                self._forget(call, deadline_done=True)
                calls.append(call)
        return calls

    def take_all(self) -> list[PendingCall]:
        """Remove and return every pending call (engine shutdown)."""
        calls = list(self._pending.values())
        for call in calls:
            self._forget(call)
        return calls

    def _forget(self, call: PendingCall, deadline_done: bool = False) -> None:
        del self._pending[call.dispatch_id]
        targets = self._by_target.get(call.target)
        if targets is not None:
            targets.discard(call.dispatch_id)
            if not targets:
                del self._by_target[call.target]
        if call.caller is not None:
            callers = self._by_caller.get(call.caller)
            if callers is not None:
                callers.discard(call.dispatch_id)
                if not callers:
                    del self._by_caller[call.caller]
        if not deadline_done:
            self._deadlines.discard(call.dispatch_id, call.deadline_slot)
