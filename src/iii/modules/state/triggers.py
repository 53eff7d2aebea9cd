"""The ``state`` trigger type: functions called on every change of a key.

A binding's config (the reference's names, each optional): ``scope`` and ``key`` restrict it to changes in
that scope / of that key; ``condition_function_id`` names a function called first with the event, and a
result of ``false`` skips the binding (any other result, or none, lets it run; a failing condition skips it
and is logged). A config that is not an object, or whose fields are not strings, is refused.

The event (the reference's payload): ``{"type": "state", "event_type": "state:created" | "state:updated" |
"state:deleted", "scope", "key", "old_value", "new_value"}``; ``old_value`` is null for a created key and
``new_value`` null for a deleted one. The write's caller never waits for the handlers, and each bound
function gets the changes in the order they were made, whatever the others do (errors are logged, not
retried; :mod:`iii.modules.change_triggers`). Unlike the reference, deleting an absent key is not an event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from iii.modules.api import BindingInfo, ModuleHost
from iii.modules.change_triggers import MAX_WAITING, ChangeTriggers

log = logging.getLogger("iii.modules.state")

TRIGGER_TYPE: Final = "state"
CREATED: Final = "state:created"
UPDATED: Final = "state:updated"
DELETED: Final = "state:deleted"
_CONFIG_FIELDS: Final = ("scope", "key", "condition_function_id")


@dataclass(frozen=True, slots=True)
class _Subscription:
    binding: BindingInfo
    scope: str | None
    key: str | None
    condition_function_id: str | None

    def matches(self, scope: str, key: str) -> bool:
        return (self.scope is None or self.scope == scope) and (self.key is None or self.key == key)


class StateTriggers(ChangeTriggers[_Subscription]):
    """The provider of the ``state`` trigger type (:class:`~iii.modules.api.TriggerProvider`)."""

    def __init__(self, host: ModuleHost, *, enabled: bool = True, max_waiting: int = MAX_WAITING) -> None:
        super().__init__(host, TRIGGER_TYPE, log, enabled=enabled, max_waiting=max_waiting)

    def activate(self, binding: BindingInfo) -> str | None:
        config = binding.config if binding.config is not None else {}
        if not isinstance(config, dict):
            return "Failed to parse trigger config: a state trigger's config must be an object"
        fields: dict[str, str | None] = {}
        for name in _CONFIG_FIELDS:
            value = config.get(name)
            if value is not None and not isinstance(value, str):
                return f"Failed to parse trigger config: `{name}` must be a string"
            fields[name] = value
        self._subscriptions[binding.binding_id] = _Subscription(
            binding, fields["scope"], fields["key"], fields["condition_function_id"]
        )
        return None

    def fire(self, event_type: str, scope: str, key: str, old_value: Any, new_value: Any) -> None:
        """Deliver one change to the matching bindings (they are called after this returns)."""
        if not self.firing:
            return
        matching = [sub for sub in self._subscriptions.values() if sub.matches(scope, key)]
        if not matching:
            return
        event = {
            "type": "state",
            "event_type": event_type,
            "scope": scope,
            "key": key,
            "old_value": old_value,
            "new_value": new_value,
        }
        what = f"{event_type} {scope}/{key}"
        self._deliver(matching, event, what)
