"""The messages of the subscription socket (pure): the clients' ``join`` / ``leave``, parsed and checked, and the
engine's wrapper messages, built.

Client -> engine (JSON text frames)::

    {"type": "join" | "leave", "data": {"subscriptionId", "streamName", "groupId", "id"?}}

Engine -> client, always the wrapper (the same object the ``stream`` triggers get)::

    {"type": "stream", "timestamp": <ms since the epoch>, "streamName", "groupId", "id": <item id or null>,
     "event": {"type": "sync", "data": [items] | item | null} | {"type": "create" | "update" | "delete", "data"}
            | {"type": "event", "event": {"type", "data"}} | {"type": "unauthorized"}}

A message that is not such an object raises :class:`MessageError`, with the close code the socket ends with
(1003 for a frame of a kind the socket does not take, 1007 for one whose content is wrong) and a reason saying
what was wrong.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

UNSUPPORTED_DATA: Final = 1003
"""Close code: a binary frame, or a message type the socket does not know."""
INVALID_PAYLOAD: Final = 1007
"""Close code: a text frame that is not JSON, or a join / leave whose fields are wrong."""
MAX_REASON_BYTES: Final = 123
"""The longest close reason a WebSocket close frame can carry (UTF-8)."""

_decoder: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()


class MessageError(Exception):
    """A client's message the socket cannot take: ``code`` is the close code, ``reason`` says why."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    """What a join or leave names: a subscription (its client's id) of a group, or of one item of it."""

    subscription_id: str
    stream_name: str
    group_id: str
    item_id: str | None


@dataclass(frozen=True, slots=True)
class ClientMessage:
    kind: Literal["join", "leave"]
    target: Target


def parse_client_message(frame: str | bytes, max_name_bytes: int) -> ClientMessage:
    """The join or leave in a text frame's content (``bytes`` for a binary frame, always refused)."""
    if isinstance(frame, bytes):
        raise MessageError(UNSUPPORTED_DATA, "binary frames are not accepted: send join / leave as JSON text")
    try:
        message = _decoder.decode(frame)
    except msgspec.DecodeError as error:
        raise MessageError(INVALID_PAYLOAD, f"not JSON: {error}") from None
    if not isinstance(message, dict):
        raise MessageError(INVALID_PAYLOAD, "a message must be a JSON object {type, data}")
    kind = message.get("type")
    if kind not in ("join", "leave"):
        raise MessageError(UNSUPPORTED_DATA, f"unknown message type {kind!r}: expected 'join' or 'leave'")
    data = message.get("data")
    if not isinstance(data, dict):
        raise MessageError(INVALID_PAYLOAD, f"{kind}: `data` must be an object")
    names = [_name(data, field, kind, max_name_bytes) for field in ("subscriptionId", "streamName", "groupId")]
    item_id = data.get("id")
    if item_id is not None:
        item_id = _name(data, "id", kind, max_name_bytes)
    return ClientMessage(kind, Target(names[0], names[1], names[2], item_id))


def _name(data: dict[str, Any], field: str, kind: str, max_name_bytes: int) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value:
        problem = "missing" if value is None else "not a non-empty string"
        raise MessageError(INVALID_PAYLOAD, f"{kind}: `{field}` is {problem}")
    if len(value.encode("utf-8", "surrogatepass")) > max_name_bytes:
        raise MessageError(INVALID_PAYLOAD, f"{kind}: `{field}` is longer than {max_name_bytes} bytes")
    return value


def close_reason(text: str) -> str:
    """``text`` cut to fit a close frame (whole characters)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= MAX_REASON_BYTES:
        return text
    return data[: MAX_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."


# --- the engine's messages ------------------------------------------------------------------------------------


def wrapper(stream_name: str, group_id: str, item_id: str | None, event: dict[str, Any]) -> dict[str, Any]:
    """The wrapper message around ``event``, stamped now."""
    return {
        "type": "stream",
        "timestamp": time.time_ns() // 1_000_000,
        "streamName": stream_name,
        "groupId": group_id,
        "id": item_id,
        "event": event,
    }


def change_event(stream_name: str, group_id: str, item_id: str, kind: str, data: Any) -> dict[str, Any]:
    """The wrapper message of a change (``kind``: create, update, delete)."""
    return wrapper(stream_name, group_id, item_id, {"type": kind, "data": data})


def send_event(stream_name: str, group_id: str, target: str | None, event_type: str, data: Any) -> dict[str, Any]:
    """The wrapper message of a ``stream::send`` event."""
    return wrapper(stream_name, group_id, target, {"type": "event", "event": {"type": event_type, "data": data}})


def sync_message(target: Target, data: Any) -> bytes:
    """The ``sync`` a join is answered with: the group's items, or the item (or null), encoded."""
    return encode(wrapper(target.stream_name, target.group_id, target.item_id, {"type": "sync", "data": data}))


def unauthorized_message(target: Target) -> bytes:
    """What a join refused by a ``stream:join`` binding is answered with, encoded."""
    return encode(wrapper(target.stream_name, target.group_id, target.item_id, {"type": "unauthorized"}))


def encode(message: Any) -> bytes:
    """``message`` as the UTF-8 JSON a text frame carries."""
    return _encoder.encode(message)


class Address(msgspec.Struct):
    """The part of a wrapper message that says who gets it (read from another engine's messages)."""

    streamName: str  # the wire's names
    groupId: str
    id: str | None = None


_address_decoder: Final = msgspec.json.Decoder(Address)


def address_of(message: bytes) -> Address:
    """The stream, group and id of an encoded wrapper message; ``msgspec.DecodeError`` if it is not one."""
    return _address_decoder.decode(message)
