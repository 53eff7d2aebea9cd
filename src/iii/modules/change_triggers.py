"""What the state and stream trigger types share: their bindings, and how they deliver a change (to each
matching binding's function, after its condition function, if any, let it through).

As in the reference, the writer never waits for the handlers, and errors are logged and counted, not retried.
Each function hears the changes in the order they were made: its call for a change starts once its call (and
condition) for the previous change is answered. A slow function holds up only itself: the reference calls the
bindings of a change one after the other in one task per change, so a function bound after a slow one got the
changes late and in the order the slow one answered them, not in the order they were made (a page of a chat
saw messages shuffled). What waits is bounded: past ``max_waiting`` changes waiting for one function (the one
in flight included), further changes are dropped for it, counted and logged, until it catches up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar

from iii.modules.api import BindingInfo, InvocationError, MetricSample, ModuleHost

MAX_WAITING: Final = 10_000
"""Changes that may wait for one function (the one in flight included) before more are dropped for it: as many
as the calls a worker may have pending (``--worker-max-pending-calls``'s default)."""


class ChangeDeliveries:
    """The deliveries under way of one trigger type (``name`` in its log lines), with their counts."""

    def __init__(self, host: ModuleHost, name: str, log: logging.Logger, *, max_waiting: int = MAX_WAITING) -> None:
        self._host = host
        self._name = name
        self._log = log
        self._max_waiting = max_waiting
        self._tasks: set[asyncio.Task[None]] = set()
        self._last: dict[str, asyncio.Task[None]] = {}
        """Function id -> the latest delivery to it: the next one waits for it."""
        self._waiting: Counter[str] = Counter()
        """Function id -> its deliveries not done (the one in flight included)."""
        self._dropping: set[str] = set()
        """Functions whose changes were dropped since they last had none waiting (logged once per episode)."""
        self.dropped = 0
        """Changes dropped for a function that had ``max_waiting`` waiting."""
        self.closed = False
        self.delivered = 0
        """Handler calls that answered."""
        self.failed = 0
        """Handler or condition calls that failed."""

    def deliver(self, targets: Sequence[tuple[str, str | None]], event: Any, what: str) -> None:
        """Call each ``(function id, condition function id or None)`` of ``targets`` with ``event``, each after
        that function's deliveries of the earlier changes; ``what`` names the change in the log lines of
        failures."""
        loop = asyncio.get_running_loop()
        for function_id, condition_function_id in targets:
            if self._waiting[function_id] >= self._max_waiting:
                self.dropped += 1
                if function_id not in self._dropping:
                    self._dropping.add(function_id)
                    self._log.warning(
                        "%s trigger: %s has %d changes waiting for it; its changes are dropped until it catches up",
                        self._name,
                        function_id,
                        self._max_waiting,
                    )
                continue
            self._waiting[function_id] += 1
            previous = self._last.get(function_id)
            task = loop.create_task(self._deliver(previous, function_id, condition_function_id, event, what))
            self._last[function_id] = task
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._done, function_id))

    def _done(self, function_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._waiting[function_id] -= 1
        if self._waiting[function_id] == 0:
            del self._waiting[function_id]
            self._dropping.discard(function_id)
        if self._last.get(function_id) is task:
            del self._last[function_id]

    async def _deliver(
        self,
        previous: asyncio.Task[None] | None,
        function_id: str,
        condition_function_id: str | None,
        event: Any,
        what: str,
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome is its own; only its end matters here
        if condition_function_id is not None:
            try:
                verdict = await self._host.invoke(condition_function_id, event)
            except InvocationError as error:
                self.failed += 1
                self._log.warning(
                    "%s trigger for %s skipped: its condition %s failed: %s",
                    self._name,
                    function_id,
                    condition_function_id,
                    error,
                )
                return
            if verdict is False:
                return
        try:
            await self._host.invoke(function_id, event)
        except InvocationError as error:
            self.failed += 1
            self._log.warning("%s trigger: %s failed on %s: %s", self._name, function_id, what, error)
        else:
            self.delivered += 1

    async def settle(self) -> None:
        """Wait until the deliveries under way, and those they lead to, are done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop the deliveries under way (the changes they tell of are stored; their events are dropped)."""
        self.closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Subscription(Protocol):
    """A binding as a trigger type keeps it: the binding, and its condition function."""

    @property
    def binding(self) -> BindingInfo: ...

    @property
    def condition_function_id(self) -> str | None: ...


S = TypeVar("S", bound=Subscription)


class ChangeTriggers(Generic[S]):
    """The part of a change-driven trigger type's provider that does not depend on what changed: its bindings
    by id (a subclass fills them in ``activate``), and the delivery of a change to those that match it."""

    def __init__(
        self, host: ModuleHost, name: str, log: logging.Logger, *, enabled: bool, max_waiting: int = MAX_WAITING
    ) -> None:
        self._name = name
        self._enabled = enabled
        self._subscriptions: dict[str, S] = {}
        self._deliveries = ChangeDeliveries(host, name, log, max_waiting=max_waiting)

    @property
    def firing(self) -> bool:
        """Changes are delivered: triggers are on and not closed."""
        return self._enabled and not self._deliveries.closed

    def _deliver(self, matching: list[S], event: Any, what: str) -> None:
        targets = [(sub.binding.function_id, sub.condition_function_id) for sub in matching]
        self._deliveries.deliver(targets, event, what)

    def deactivate(self, binding: BindingInfo) -> None:
        self._subscriptions.pop(binding.binding_id, None)

    @property
    def delivered(self) -> int:
        """Handler calls that answered."""
        return self._deliveries.delivered

    @property
    def failed(self) -> int:
        """Handler or condition calls that failed."""
        return self._deliveries.failed

    @property
    def dropped(self) -> int:
        """Changes dropped for a function that had too many waiting."""
        return self._deliveries.dropped

    async def settle(self) -> None:
        """Wait until the deliveries under way, and those they lead to, are done."""
        await self._deliveries.settle()

    async def close(self) -> None:
        """Stop the deliveries under way (the changes they tell of are stored; their events are dropped)."""
        await self._deliveries.close()

    @property
    def binding_count(self) -> int:
        return len(self._subscriptions)

    def metrics(self) -> Iterator[MetricSample]:
        """``<type>_trigger_bindings`` and ``<type>_trigger_calls{outcome=ok|failed|dropped}``, for the module's
        ``/metrics``."""
        name = self._name
        yield MetricSample(f"{name}_trigger_bindings", self.binding_count, help=f"Bindings of `{name}`")
        outcomes = {"ok": self.delivered, "failed": self.failed, "dropped": self.dropped}
        for outcome, value in outcomes.items():
            yield MetricSample(
                f"{name}_trigger_calls",
                value,
                {"outcome": outcome},
                help=f"{name.capitalize()} trigger calls (dropped: not made, too many waiting for the function)",
                kind="counter",
            )
