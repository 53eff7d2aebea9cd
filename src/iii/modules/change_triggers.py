"""What the state and stream trigger types share: their bindings, and how they deliver a change (in a task of
its own, to the matching bindings one after the other, each after its condition function, if any, let it through).

As in the reference, the writer never waits for the handlers, each binding's call is awaited before the next
one's, and errors are logged and counted, not retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from iii.modules.api import BindingInfo, InvocationError, ModuleHost


class ChangeDeliveries:
    """The deliveries under way of one trigger type (``name`` in its log lines), with their counts."""

    def __init__(self, host: ModuleHost, name: str, log: logging.Logger) -> None:
        self._host = host
        self._name = name
        self._log = log
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self.delivered = 0
        """Handler calls that answered."""
        self.failed = 0
        """Handler or condition calls that failed."""

    def deliver(self, targets: Sequence[tuple[str, str | None]], event: Any, what: str) -> None:
        """Call each ``(function id, condition function id or None)`` of ``targets`` with ``event``, in a task
        of its own; ``what`` names the change in the log lines of failures."""
        task = asyncio.get_running_loop().create_task(self._deliver(targets, event, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, targets: Sequence[tuple[str, str | None]], event: Any, what: str) -> None:
        for function_id, condition_function_id in targets:
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
                    continue
                if verdict is False:
                    continue
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

    def __init__(self, host: ModuleHost, name: str, log: logging.Logger, *, enabled: bool) -> None:
        self._enabled = enabled
        self._subscriptions: dict[str, S] = {}
        self._deliveries = ChangeDeliveries(host, name, log)

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

    async def settle(self) -> None:
        """Wait until the deliveries under way, and those they lead to, are done."""
        await self._deliveries.settle()

    async def close(self) -> None:
        """Stop the deliveries under way (the changes they tell of are stored; their events are dropped)."""
        await self._deliveries.close()

    @property
    def binding_count(self) -> int:
        return len(self._subscriptions)
