"""The ``stream`` trigger type: functions called on every change of a stream's items, and on its events.

A binding's config (the reference's names): ``stream_name`` (required) restricts it to one stream;
``group_id`` and ``item_id`` (optional; empty counts as absent, as there) to one group / one item;
``condition_function_id`` names a function called first with the event, and a result of ``false`` skips the
binding (any other result lets it run; a failing condition skips it and is logged). A config that is not an
object, lacks ``stream_name``, or whose fields are not strings, is refused.

The event is the reference's wrapper message, the one its subscribers get too::

    {"type": "stream", "timestamp": <ms since the epoch>, "streamName", "groupId", "id": <item id or null>,
     "event": {"type": "create" | "update", "data": <new value>}
            | {"type": "delete", "data": <old value>}
            | {"type": "event", "event": {"type": <the sender's type>, "data": <the sender's data>}}}

(the top-level ``type`` is always ``"stream"``; what happened is ``event.type``). The writer never waits for
the handlers, and each bound function gets the changes in the order they were made, whatever the others do
(errors are logged, not retried; :mod:`iii.modules.change_triggers`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

from iii.modules.api import BindingInfo, ModuleHost
from iii.modules.change_triggers import MAX_WAITING, ChangeTriggers
from iii.modules.streams.messages import change_event, send_event

log = logging.getLogger("iii.modules.streams")

__all__ = ["CREATE", "DELETE", "TRIGGER_TYPE", "UPDATE", "StreamTriggers", "change_event", "send_event"]

TRIGGER_TYPE: Final = "stream"
CREATE: Final = "create"
UPDATE: Final = "update"
DELETE: Final = "delete"
_OPTIONAL_FIELDS: Final = ("group_id", "item_id", "condition_function_id")


@dataclass(frozen=True, slots=True)
class _Subscription:
    binding: BindingInfo
    stream_name: str
    group_id: str | None
    item_id: str | None
    condition_function_id: str | None

    def matches(self, stream_name: str, group_id: str, item_id: str | None) -> bool:
        return (
            self.stream_name == stream_name
            and (self.group_id is None or self.group_id == group_id)
            and (self.item_id is None or self.item_id == item_id)
        )


class StreamTriggers(ChangeTriggers[_Subscription]):
    """The provider of the ``stream`` trigger type (:class:`~iii.modules.api.TriggerProvider`)."""

    def __init__(self, host: ModuleHost, *, enabled: bool = True, max_waiting: int = MAX_WAITING) -> None:
        super().__init__(host, TRIGGER_TYPE, log, enabled=enabled, max_waiting=max_waiting)

    def activate(self, binding: BindingInfo) -> str | None:
        config = binding.config if binding.config is not None else {}
        if not isinstance(config, dict):
            return "Failed to parse trigger config: a stream trigger's config must be an object"
        stream_name = config.get("stream_name")
        if not isinstance(stream_name, str) or not stream_name:
            return "Failed to parse trigger config: a stream trigger needs `stream_name`, a non-empty string"
        fields: dict[str, str | None] = {}
        for name in _OPTIONAL_FIELDS:
            value = config.get(name)
            if value is not None and not isinstance(value, str):
                return f"Failed to parse trigger config: `{name}` must be a string"
            fields[name] = value or None
        self._subscriptions[binding.binding_id] = _Subscription(
            binding, stream_name, fields["group_id"], fields["item_id"], fields["condition_function_id"]
        )
        return None

    def fire(self, event: dict[str, Any]) -> None:
        """Deliver one wrapper message (:func:`change_event`, :func:`send_event`) to the matching bindings."""
        if not self.firing:
            return
        matching = [
            sub
            for sub in self._subscriptions.values()
            if sub.matches(event["streamName"], event["groupId"], event["id"])
        ]
        if not matching:
            return
        what = f"{event['event']['type']} of {event['streamName']}/{event['groupId']}"
        self._deliver(matching, event, what)
