"""Payloads and errors as they travel: values to raw JSON, a handler's exception to an error result, an error
result to the caller's :class:`~iii.errors.InvocationError`."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from pydantic import BaseModel

from iii.errors import FunctionError, InvocationError
from iii.protocol import errors
from iii.protocol.codec import decode_value
from iii.sdk.channels import ChannelReader, ChannelWriter


def _enc_hook(value: Any) -> Any:
    """How payload values that are not plain JSON are sent: refs and models as dicts, live ends as refs."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (ChannelReader, ChannelWriter)):
        value._kept = True  # handed on: whoever gets it finishes it
        return value.ref.model_dump()
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


_payload_encoder: Final = msgspec.json.Encoder(enc_hook=_enc_hook)


def encode_payload(value: Any) -> msgspec.Raw:
    """A payload as raw JSON; raises ``TypeError`` naming the type that cannot be sent."""
    return msgspec.Raw(_payload_encoder.encode(value))


def failure(exc: BaseException) -> dict[str, Any]:
    """The error result of a handler that raised ``exc``; never raises, even if ``exc`` cannot be shown.

    A :class:`~iii.errors.FunctionError` answers with its own code and message (and no traceback: the handler
    chose to answer so); anything else is ``invocation_failed``.
    """
    if isinstance(exc, FunctionError):
        return {"code": str(exc.code), "message": str(exc.message)}
    try:
        message = str(exc) or type(exc).__name__
    except BaseException:  # an exception whose __str__ fails still gets answered
        message = f"{type(exc).__name__} (its message could not be formatted)"
    if isinstance(exc, asyncio.CancelledError):
        message = (
            f"the handler was cancelled: {message}" if message != "CancelledError" else "the handler was cancelled"
        )
    try:
        stack = "".join(traceback.format_exception(exc))
    except BaseException:
        stack = type(exc).__name__
    return {"code": errors.INVOCATION_FAILED, "message": message, "stacktrace": stack}


def invocation_error(error: Any, function_id: str, invocation_id: str) -> InvocationError:
    """The caller's exception for an ``invocationresult.error`` value."""
    if isinstance(error, Mapping) and isinstance(error.get("code"), str):
        return InvocationError(
            error["code"], str(error.get("message", "")), function_id, error.get("stacktrace"), invocation_id
        )
    return InvocationError("UNKNOWN", str(error), function_id, invocation_id=invocation_id)


def describe_error(error: msgspec.Raw) -> str:
    """An error value as ``code: message`` for a log line (its JSON text if it has another shape)."""
    try:
        value = decode_value(error)
    except (msgspec.DecodeError, RecursionError):
        return bytes(error).decode(errors="replace")
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return f"{value.get('code') or 'error'}: {value['message']}"
    return bytes(error).decode(errors="replace")
