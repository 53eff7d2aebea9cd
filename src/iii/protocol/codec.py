"""JSON codec for the worker protocol: bytes in, typed messages out, and back.

msgspec does the work: it decodes straight into the tagged union of :mod:`iii.protocol.messages`
(ignoring unknown fields), keeps relayed payloads as raw bytes, and writes UTF-8 (never ``\\uXXXX``
escapes). Contracts:

* :func:`decode_inbound` returns a message, or ``None`` for a well-formed message of a type this engine
  does not know (the protocol says to ignore those), or raises :class:`MalformedMessage` with a reason a
  human can act on.
* :func:`encode` never fails for messages built by the engine.
* Decoded messages may point into the buffer they were decoded from: use :func:`detached` on any payload
  kept after the buffer is reused.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import msgspec

from iii.protocol.messages import INBOUND_TYPES, JSON_NULL, FromEngineMessage, InboundMessage, Message

_inbound_decoder: Final = msgspec.json.Decoder(InboundMessage)
_from_engine_decoder: Final = msgspec.json.Decoder(FromEngineMessage)
_any_decoder: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()
_KNOWN_TYPES: Final = frozenset(str(cls.__struct_config__.tag) for cls in INBOUND_TYPES)


class _Envelope(msgspec.Struct):
    type: str


_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)


class MalformedMessage(ValueError):
    """A control message that cannot be used: not JSON, not an object, no ``type``, or wrong field types.

    ``invocation_id`` is set when the message was an ``invokefunction`` whose id could still be read, so
    the engine can answer that call with an error instead of leaving its caller waiting.
    """

    def __init__(self, reason: str, *, message_type: str | None = None, invocation_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.message_type = message_type
        self.invocation_id = invocation_id


def decode_inbound(payload: bytes | bytearray | memoryview) -> InboundMessage | None:
    """Decode one worker→engine text message.

    Returns ``None`` for an unknown ``type`` (ignored by protocol rule). Raises :class:`MalformedMessage`
    for invalid UTF-8, invalid JSON, a non-object, a missing or non-string ``type``, or a known type whose
    fields have the wrong types.
    """
    try:
        # msgspec checks the strings it decodes but not the relayed raw payloads; peers must never be
        # handed invalid UTF-8, so the whole message is checked once here.
        str(payload, "utf-8")
        message: InboundMessage = _inbound_decoder.decode(payload)
        return message
    except UnicodeDecodeError:
        raise MalformedMessage("text message is not valid UTF-8") from None
    except msgspec.ValidationError as exc:
        _raise_unless_unknown_type(payload, exc)
        return None
    except msgspec.DecodeError as exc:
        raise MalformedMessage(f"message is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedMessage("message nests too deeply") from None


def _raise_unless_unknown_type(payload: bytes | bytearray | memoryview, exc: msgspec.ValidationError) -> None:
    """Return quietly for a message of an unknown type; raise :class:`MalformedMessage` for a broken one."""
    try:
        envelope = _envelope_decoder.decode(payload)
    except msgspec.ValidationError:
        raise MalformedMessage(f"message must be a JSON object with a string 'type' field ({exc})") from None
    if envelope.type not in _KNOWN_TYPES:
        return
    invocation_id: str | None = None
    if envelope.type == "invokefunction":
        try:
            value: Any = _any_decoder.decode(payload)
        except msgspec.DecodeError:  # a value no Python type holds (1e999): the id cannot be trusted either
            value = {}
        candidate = value.get("invocation_id")
        invocation_id = candidate if isinstance(candidate, str) else None
    raise MalformedMessage(
        f"invalid '{envelope.type}' message: {exc}", message_type=envelope.type, invocation_id=invocation_id
    ) from None


class _Addressed(msgspec.Struct):
    type: str | None = None
    invocation_id: str | None = None
    function_id: str | None = None


_addressed_decoder: Final = msgspec.json.Decoder(_Addressed)


def peek_address(payload: bytes | bytearray | memoryview) -> tuple[str | None, str | None, str | None]:
    """``(type, invocation_id, function_id)`` of a message that will not be decoded whole (an oversized one).

    The rest of the message is skipped without building Python values. Fields that are missing or of
    another type, and messages that are not JSON objects, give ``None``.
    """
    try:
        addressed = _addressed_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return None, None, None
    return addressed.type, addressed.invocation_id, addressed.function_id


def decode_from_engine(payload: bytes | bytearray | memoryview) -> FromEngineMessage | None:
    """Decode one engine→worker message; ``None`` for types this SDK does not know or messages it cannot use."""
    try:
        message: FromEngineMessage = _from_engine_decoder.decode(payload)
        return message
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


def detached(raw: msgspec.Raw) -> msgspec.Raw:
    """A copy of ``raw`` that does not point into the buffer it was decoded from.

    Decoded messages may reference the receive buffer of the socket, which is reused after the frame
    callback returns; any payload kept longer than that (registration metadata, say) must be detached.
    """
    if raw is JSON_NULL:
        return raw
    return msgspec.Raw(bytes(raw))


def encode(message: Message) -> bytes:
    """Encode a message as compact UTF-8 JSON (optional fields that are ``None`` are left out)."""
    return _encoder.encode(message)


def encode_value(value: Any) -> bytes:
    """Encode any JSON-compatible value (used for builtin results)."""
    return _encoder.encode(value)


def decode_value(payload: bytes | bytearray | memoryview | msgspec.Raw) -> Any:
    """Decode any JSON value into Python objects."""
    return _any_decoder.decode(payload)


_CALLER_KEY: Final = b'"_caller_worker_id"'
_WHITESPACE: Final = b" \t\r\n"


def with_caller_worker_id(data: msgspec.Raw, worker_id: str) -> msgspec.Raw:
    """Return ``data`` with ``_caller_worker_id`` set to ``worker_id`` when it is a JSON object.

    Non-object payloads are returned unchanged, as the reference engine does. The member is spliced in as
    the object's last one without decoding the payload (one copy, however large). JSON parsers keep the
    last of duplicate keys, so the engine's value wins even over a key spelled with escapes; a payload that
    literally contains the key is decoded and rebuilt, so that the key appears once.
    """
    raw = bytes(data)
    stripped = raw.strip(_WHITESPACE)
    if not stripped.startswith(b"{"):
        return data
    if _CALLER_KEY in stripped:
        try:
            value = _any_decoder.decode(stripped)
        except msgspec.DecodeError:
            value = None  # not decodable as Python values (1e999): splice, the last duplicate key wins
        if isinstance(value, dict):
            value["_caller_worker_id"] = worker_id
            return msgspec.Raw(_encoder.encode(value))
    member = _caller_member(worker_id)
    if stripped[1:-1].strip(_WHITESPACE):
        return msgspec.Raw(b"".join((stripped[:-1], b",", member, b"}")))
    return msgspec.Raw(b"".join((b"{", member, b"}")))


@functools.lru_cache(maxsize=4096)
def _caller_member(worker_id: str) -> bytes:
    return _CALLER_KEY + b":" + _encoder.encode(worker_id)
