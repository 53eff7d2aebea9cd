"""The codec: lenient decoding, clear errors for broken input, UTF-8 output, caller-id injection."""

from __future__ import annotations

import json

import msgspec
import pytest

from iii.protocol.codec import MalformedMessage, decode_inbound, encode, with_caller_worker_id
from iii.protocol.messages import (
    JSON_NULL,
    Delivery,
    InvocationResult,
    InvokeFunction,
    RegisterFunction,
    WorkerRegistered,
    is_null,
)


def test_invoke_without_data_means_null_and_unknown_fields_are_ignored() -> None:
    message = decode_inbound(b'{"type":"invokefunction","function_id":"a::b","invocation_id":"x","future":1}')
    assert isinstance(message, InvokeFunction)
    assert message.function_id == "a::b"
    assert message.invocation_id == "x"
    assert is_null(message.data)


def test_payload_bytes_are_kept_verbatim() -> None:
    message = decode_inbound(b'{"type":"invokefunction","function_id":"f","data":{"k":[1,2.5,"\xc3\xa9"]}}')
    assert isinstance(message, InvokeFunction)
    assert bytes(message.data) == b'{"k":[1,2.5,"\xc3\xa9"]}'


def test_unknown_message_type_is_ignored() -> None:
    assert decode_inbound(b'{"type":"a-future-type","anything":true}') is None


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1,2]", "JSON object with a string 'type'"),
        (b'{"no_type":1}', "JSON object with a string 'type'"),
        (b'{"type":7}', "JSON object with a string 'type'"),
        (b'{"type":"registerfunction"}', "invalid 'registerfunction' message"),
        (b'{"type":"registerfunction","id":5}', "Expected `str`, got `int`"),
        (b'{"type":"invokefunction","function_id":"f","data":"\xff"}', "UTF-8"),
    ],
)
def test_broken_messages_raise_with_a_reason(payload: bytes, fragment: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode_inbound(payload)
    assert fragment in caught.value.reason


def test_broken_invoke_keeps_its_invocation_id_for_the_error_reply() -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode_inbound(b'{"type":"invokefunction","invocation_id":"id-1","function_id":42}')
    assert caught.value.invocation_id == "id-1"
    assert caught.value.message_type == "invokefunction"


def test_encoding_is_utf8_and_leaves_out_absent_fields() -> None:
    wire = encode(InvocationResult(invocation_id="i", function_id="f", result=msgspec.Raw('"😀"'.encode())))
    assert wire == '{"type":"invocationresult","invocation_id":"i","function_id":"f","result":"😀"}'.encode()
    assert b"\\u" not in wire
    assert encode(WorkerRegistered(worker_id="w")) == b'{"type":"workerregistered","worker_id":"w"}'


def test_delivery_always_carries_data() -> None:
    wire = json.loads(encode(Delivery(invocation_id="d", function_id="f", data=JSON_NULL)))
    assert wire == {"type": "invokefunction", "invocation_id": "d", "function_id": "f", "data": None}


def test_register_function_round_trip_keeps_formats() -> None:
    message = decode_inbound(b'{"type":"registerfunction","id":"f","request_format":{"type":"object"}}')
    assert isinstance(message, RegisterFunction)
    assert json.loads(bytes(message.request_format)) == {"type": "object"}
    assert is_null(message.response_format)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{}", {"_caller_worker_id": "W"}),
        (b" { } ", {"_caller_worker_id": "W"}),
        (b'{"a":1}', {"a": 1, "_caller_worker_id": "W"}),
        (b'{"_caller_worker_id":"spoofed","a":1}', {"a": 1, "_caller_worker_id": "W"}),
        (b'{"_caller\\u005fworker_id":"spoofed"}', {"_caller_worker_id": "W"}),
        (
            b'{"nested":{"_caller_worker_id":"inner"}}',
            {"nested": {"_caller_worker_id": "inner"}, "_caller_worker_id": "W"},
        ),
    ],
)
def test_caller_worker_id_is_set_on_objects(data: bytes, expected: dict[str, object]) -> None:
    result = with_caller_worker_id(msgspec.Raw(data), "W")
    assert json.loads(bytes(result)) == expected
    # Exactly one top-level occurrence: no duplicate keys for a last-wins parser to resolve.
    assert bytes(result).count(b'"_caller_worker_id":"W"') == 1


@pytest.mark.parametrize("data", [b"null", b"[1,2]", b'"text"', b"42", b"true"])
def test_non_object_payloads_are_left_alone(data: bytes) -> None:
    assert bytes(with_caller_worker_id(msgspec.Raw(data), "W")) == data


def test_messages_that_nest_too_deeply_or_hold_unrepresentable_numbers_are_malformed_not_crashes() -> None:
    deep = b'{"type":"invokefunction","function_id":"x","data":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(MalformedMessage, match="nests too deeply"):
        decode_inbound(deep)
    with pytest.raises(MalformedMessage, match="timeout_ms"):
        decode_inbound(b'{"type":"invokefunction","invocation_id":"i","function_id":"x","timeout_ms":1e999}')


def test_the_caller_id_is_spliced_into_payloads_python_cannot_decode() -> None:
    raw = msgspec.Raw(b'{"_caller_worker_id":1e999,"n":1e999}')
    spliced = bytes(with_caller_worker_id(raw, "w-1"))
    assert spliced.endswith(b',"_caller_worker_id":"w-1"}')
