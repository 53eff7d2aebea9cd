"""The payloads of the ``stream::*`` functions, checked and typed (pure).

Field names are the reference engine's (``stream_name``, ``group_id``, ``item_id``, ``data``, ``ops``, and
``type`` / ``id`` for ``stream::send``); unknown fields are ignored, as there. Every problem raises
:class:`~iii.modules.api.FunctionError` with a code of :mod:`iii.modules.streams.errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iii.modules.api import FunctionError
from iii.modules.state.ops import Op, parse_ops
from iii.modules.streams.errors import DESERIALIZATION_ERROR, INVALID_NAME
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
        fields = _object(data, "stream::set")
        address = self.item(fields, "stream::set")
        if "data" not in fields:
            raise _malformed("stream::set", "missing field `data`")
        return SetRequest(address, fields["data"])

    def update(self, data: Any) -> UpdateRequest:
        fields = _object(data, "stream::update")
        address = self.item(fields, "stream::update")
        if "ops" not in fields:
            raise _malformed("stream::update", "missing field `ops`")
        return UpdateRequest(address, parse_ops(fields["ops"]))

    def send(self, data: Any) -> SendRequest:
        fields = _object(data, "stream::send")
        group = self.group(fields, "stream::send")
        event_type = fields.get("type")
        if not isinstance(event_type, str):
            raise _malformed("stream::send", "`type` must be a string" if "type" in fields else "missing field `type`")
        if "data" not in fields:
            raise _malformed("stream::send", "missing field `data`")
        target = fields.get("id")
        if target is not None and not isinstance(target, str):
            raise _malformed("stream::send", "`id` must be a string")
        return SendRequest(group, event_type, fields["data"], target)

    def item(self, data: Any, function_id: str) -> ItemAddress:
        """``{stream_name, group_id, item_id}`` (get, delete, and the start of set and update)."""
        fields = _object(data, function_id)
        return ItemAddress(self.group(fields, function_id), self._name(fields, "item_id", function_id))

    def group(self, data: Any, function_id: str) -> GroupAddress:
        """``{stream_name, group_id}`` (list, send)."""
        fields = _object(data, function_id)
        return GroupAddress(self.stream(fields, function_id), self._name(fields, "group_id", function_id))

    def stream(self, data: Any, function_id: str) -> str:
        """``{stream_name}`` (list_groups)."""
        return self._name(_object(data, function_id), "stream_name", function_id)

    def _name(self, fields: dict[str, Any], field: str, function_id: str) -> str:
        if field not in fields:
            raise _malformed(function_id, f"missing field `{field}`")
        name = fields[field]
        if not isinstance(name, str):
            raise _malformed(function_id, f"`{field}` must be a string")
        if not name:
            raise FunctionError(INVALID_NAME, f"{function_id}: `{field}` must not be empty")
        try:
            size = len(name.encode())
        except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800"): no backend can store it
            raise FunctionError(INVALID_NAME, f"{function_id}: `{field}` is not valid Unicode text") from None
        if size > self.max_name_bytes:
            raise FunctionError(
                INVALID_NAME, f"{function_id}: `{field}` is {size} bytes, the limit is {self.max_name_bytes}"
            )
        return name


def _malformed(function_id: str, message: str) -> FunctionError:
    return FunctionError(DESERIALIZATION_ERROR, f"Failed to deserialize input for {function_id}: {message}")


def _object(data: Any, function_id: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _malformed(function_id, "the payload must be an object")
    return data
