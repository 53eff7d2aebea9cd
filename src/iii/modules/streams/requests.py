"""The payloads of the ``stream::*`` functions, checked and typed (pure).

Field names are the reference engine's (``stream_name``, ``group_id``, ``item_id``, ``data``, ``ops``, and
``type`` / ``id`` for ``stream::send``); unknown fields are ignored, as there. Every problem raises
:class:`~iii.modules.api.FunctionError` with a code of :mod:`iii.modules.streams.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iii.modules.state.ops import Op, parse_ops
from iii.modules.state.requests import checked_name, malformed, payload_object
from iii.modules.streams.errors import INVALID_NAME
from iii.modules.streams.store import GroupAddress


@dataclass(frozen=True, slots=True)
class ItemAddress:
    group: GroupAddress
    item_id: str


@dataclass(frozen=True, slots=True)
class SetRequest:
    address: ItemAddress
    data: Any


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    address: ItemAddress
    ops: list[Op]


@dataclass(frozen=True, slots=True)
class SendRequest:
    group: GroupAddress
    event_type: str
    data: Any
    id: str | None
    """The one subscriber the event is for (the reference's ``id``); None: the whole group."""


class Parser:
    """Reads payloads under the limits of one module (``max_name_bytes``)."""

    def __init__(self, max_name_bytes: int) -> None:
        self.max_name_bytes = max_name_bytes

    def set(self, data: Any) -> SetRequest:
        fields = payload_object(data, "stream::set")
        address = self.item(fields, "stream::set")
        if "data" not in fields:
            raise malformed("stream::set", "missing field `data`")
        return SetRequest(address, fields["data"])

    def update(self, data: Any) -> UpdateRequest:
        fields = payload_object(data, "stream::update")
        address = self.item(fields, "stream::update")
        if "ops" not in fields:
            raise malformed("stream::update", "missing field `ops`")
        return UpdateRequest(address, parse_ops(fields["ops"]))

    def send(self, data: Any) -> SendRequest:
        fields = payload_object(data, "stream::send")
        group = self.group(fields, "stream::send")
        event_type = fields.get("type")
        if not isinstance(event_type, str):
            raise malformed("stream::send", "`type` must be a string" if "type" in fields else "missing field `type`")
        if "data" not in fields:
            raise malformed("stream::send", "missing field `data`")
        target = fields.get("id")
        if target is not None and not isinstance(target, str):
            raise malformed("stream::send", "`id` must be a string")
        return SendRequest(group, event_type, fields["data"], target)

    def item(self, data: Any, function_id: str) -> ItemAddress:
        """``{stream_name, group_id, item_id}`` (get, delete, and the start of set and update)."""
        fields = payload_object(data, function_id)
        return ItemAddress(self.group(fields, function_id), self._name(fields, "item_id", function_id))

    def group(self, data: Any, function_id: str) -> GroupAddress:
        """``{stream_name, group_id}`` (list, send)."""
        fields = payload_object(data, function_id)
        return GroupAddress(self.stream(fields, function_id), self._name(fields, "group_id", function_id))

    def stream(self, data: Any, function_id: str) -> str:
        """``{stream_name}`` (list_groups)."""
        return self._name(payload_object(data, function_id), "stream_name", function_id)

    def _name(self, fields: dict[str, Any], field: str, function_id: str) -> str:
        return checked_name(fields, field, function_id, INVALID_NAME, self.max_name_bytes)
