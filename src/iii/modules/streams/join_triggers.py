"""The ``stream:join`` and ``stream:leave`` trigger types: functions called when a subscriber joins or leaves.

The payload (the reference's)::

    {"subscription_id", "stream_name", "group_id", "id": <item id or null>, "context": <the auth function's>}

A binding's config is ``{}`` (anything else in it is ignored). ``stream:join`` bindings are asked before the
subscription starts, one after the other: an answer ``{"unauthorized": true}`` refuses it (the client gets an
``unauthorized`` message, and no sync and no changes of it). A join binding that fails refuses it too (fail
closed: it was put there to decide). ``stream:leave`` bindings are told, in a task of their own, when a client
leaves and, for each subscription still open, when its connection ends.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from iii.modules.api import BindingInfo, InvocationError, ModuleHost
from iii.modules.change_triggers import ChangeDeliveries
from iii.modules.streams.messages import Target

log = logging.getLogger("iii.modules.streams")

JOIN: Final = "stream:join"
LEAVE: Final = "stream:leave"


def payload(target: Target, context: Any) -> dict[str, Any]:
    """What a join or leave binding is called with."""
    return {
        "subscription_id": target.subscription_id,
        "stream_name": target.stream_name,
        "group_id": target.group_id,
        "id": target.item_id,
        "context": context,
    }


class SubscriberTriggers:
    """The provider of one of the two trigger types (:class:`~iii.modules.api.TriggerProvider`)."""

    def __init__(self, host: ModuleHost, type_id: str) -> None:
        self._host = host
        self.type_id = type_id
        self._functions: dict[str, str] = {}
        """binding id -> function id."""
        self._deliveries = ChangeDeliveries(host, type_id, log)

    def activate(self, binding: BindingInfo) -> str | None:
        if binding.config is not None and not isinstance(binding.config, dict):
            return f"Failed to parse trigger config: a {self.type_id} trigger's config must be an object"
        self._functions[binding.binding_id] = binding.function_id
        return None

    def deactivate(self, binding: BindingInfo) -> None:
        self._functions.pop(binding.binding_id, None)

    @property
    def binding_count(self) -> int:
        return len(self._functions)

    async def admits(self, target: Target, context: Any) -> bool:
        """(join) Whether every binding lets the subscription start (see the module docstring)."""
        event = payload(target, context)
        for function_id in list(self._functions.values()):
            try:
                answer = await self._host.invoke(function_id, event)
            except InvocationError as error:
                log.warning(
                    "%s: %s failed (%s): subscription %s to %s/%s refused",
                    self.type_id,
                    function_id,
                    error,
                    target.subscription_id,
                    target.stream_name,
                    target.group_id,
                )
                return False
            if isinstance(answer, dict) and answer.get("unauthorized") is True:
                return False
        return True

    def tell(self, target: Target, context: Any) -> None:
        """(leave) Call every binding with the subscription, in a task of its own."""
        if self._functions and not self._deliveries.closed:
            targets = [(function_id, None) for function_id in self._functions.values()]
            self._deliveries.deliver(targets, payload(target, context), f"{target.stream_name}/{target.group_id}")

    async def settle(self) -> None:
        await self._deliveries.settle()

    async def close(self) -> None:
        await self._deliveries.close()
