"""Triggers for workers: bind functions to trigger types, and provide trigger types of your own.

A trigger type's provider receives every binding of the type through its :class:`TriggerHandler`
(``register_trigger`` when a function is bound, ``unregister_trigger`` when it is unbound or its worker
leaves) and fires a binding by calling its ``function_id``. Handler methods may be ``def`` or
``async def``; an exception from ``register_trigger`` refuses the binding, and the binding worker is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

C = TypeVar("C")


@dataclass
class TriggerConfig(Generic[C]):
    """One binding, as its provider sees it."""

    id: str
    function_id: str
    config: C
    metadata: Any = None


class TriggerHandler(Generic[C]):
    """What a trigger type's provider implements (both methods may also be plain ``def``)."""

    async def register_trigger(self, config: TriggerConfig[C]) -> None:
        """A function was bound: start firing it. Raise to refuse the binding."""

    async def unregister_trigger(self, config: TriggerConfig[C]) -> None:
        """A binding went away: stop firing it."""


@dataclass
class Trigger:
    """A binding made by this worker (:meth:`III.register_trigger`); ``unregister()`` removes it."""

    id: str
    trigger_type: str
    function_id: str
    _unregister: Any

    def unregister(self) -> None:
        self._unregister(self.id)


@dataclass
class TriggerTypeRef:
    """A trigger type provided by this worker (:meth:`III.register_trigger_type`)."""

    id: str
    _unregister: Any

    def unregister(self) -> None:
        self._unregister(self.id)
