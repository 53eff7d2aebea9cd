"""Turning HTTP requests into function payload parts, and function answers into HTTP responses.

Plain functions of values, kept apart from the server so they are tested on their own.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from aiohttp import web
from multidict import CIMultiDict, MultiMapping

_FRAMING_HEADERS: Final = frozenset(("content-length", "transfer-encoding", "connection"))
"""Headers a returned response may not set: the server frames the body itself."""


_TOKEN_CHARS: Final = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class BadResponse(ValueError):
    """A function returned something that is not a usable HTTP response (the message says what)."""


def new_error_id() -> str:
    """An id for a server error, shown to the client and written in the engine's log line about it."""
    return secrets.token_hex(6)


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    error_id: str | None = None,
) -> web.Response:
    """An error the engine answers itself, in one stable shape: ``{"error": {"code", "message"}}``.

    Server errors (5xx) carry an ``error_id`` (``error_id``, or a new one).
    """
    error: dict[str, str] = {"code": code, "message": message}
    if status >= 500:
        error["error_id"] = error_id or new_error_id()
    return web.Response(
        status=status,
        body=msgspec.json.encode({"error": error}),
        content_type="application/json",
        headers=headers,
    )


def is_json(content_type: str) -> bool:
    """``application/json`` and the ``+json`` family; these bodies are parsed for ``body``."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def request_headers(headers: MultiMapping[str]) -> dict[str, str]:
    """Header names in lower case; a repeated header's values joined with ``, `` (as RFC 9110 allows)."""
    merged: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def query_params(query: MultiMapping[str]) -> dict[str, str | list[str]]:
    """A parameter given once is a string; one given several times is the list of its values."""
    params: dict[str, str | list[str]] = {}
    for name in query:
        if name not in params:
            values = query.getall(name)
            params[name] = values[0] if len(values) == 1 else list(values)
    return params


_ENVELOPE_KEYS: Final = frozenset(("status_code", "headers", "body"))


def is_envelope(value: Any) -> bool:
    """Whether a returned value is a response envelope rather than data: an object with ``status_code`` and
    no key but ``status_code``, ``headers`` and ``body``. What the SDKs' helpers return (ours and the
    official ones) always has ``status_code``; data that merely has a ``body`` or ``headers`` field
    (``{"id": 7, "body": "text"}``, ``{"headers": [...], "rows": [...]}``) is data."""
    return isinstance(value, dict) and "status_code" in value and value.keys() <= _ENVELOPE_KEYS


def response_from_value(value: Any) -> web.Response:
    """The HTTP response for what a function returned.

    An envelope (:func:`is_envelope`) is a response (:func:`response_from_envelope`); any other value is
    data, sent as a JSON body with status 200. Raises :class:`BadResponse` for an unusable envelope.
    """
    if is_envelope(value):
        return response_from_envelope(value)
    return _response(200, CIMultiDict(), True, value)


def response_from_envelope(envelope: Mapping[str, Any]) -> web.Response:
    """The HTTP response an envelope describes: ``status_code`` (200 when absent), ``headers`` (an object
    or a list of ``"Name: value"`` lines) and ``body`` (none when absent). A string body with a content
    type of the sender's choosing is sent as it is, any other body as JSON. Other keys are not looked at.
    Raises :class:`BadResponse` for a status outside 100-599 or malformed headers.
    """
    headers = _response_headers(envelope.get("headers"))
    return _response(envelope.get("status_code", 200), headers, "body" in envelope, envelope.get("body"))


def _response(status: Any, headers: CIMultiDict[str], has_body: bool, body: Any) -> web.Response:
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise BadResponse(f"status_code must be an integer from 100 to 599, got {status!r}")
    content_type = headers.get("content-type")
    if not has_body or (content_type is not None and body is None):
        data = b""
    elif content_type is not None and isinstance(body, str):
        data = body.encode()
    else:
        data = msgspec.json.encode(body)
        if content_type is None:
            headers["Content-Type"] = "application/json"
    return web.Response(status=status, body=data, headers=headers)


def _response_headers(raw: Any) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    if raw is None:
        return headers
    if isinstance(raw, dict):
        pairs = [(str(name), value) for name, value in raw.items()]
    elif isinstance(raw, list):
        pairs = []
        for line in raw:
            name, sep, value = line.partition(":") if isinstance(line, str) else ("", "", "")
            if not sep or not name.strip():
                raise BadResponse(f"a header line must read 'Name: value', got {line!r}")
            pairs.append((name.strip(), value.strip()))
    else:
        raise BadResponse(f"headers must be an object or a list of 'Name: value' lines, got {type(raw).__name__}")
    for name, value in pairs:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise BadResponse(f"header {name!r} must have a string value, got {type(value).__name__}")
        if not header_allowed(name, str(value)):
            raise BadResponse(f"header {name!r} has a name or value that cannot be sent")
        if name.lower() not in _FRAMING_HEADERS:
            headers.add(name, str(value))
    return headers


def header_allowed(name: str, value: str) -> bool:
    """Whether a header can be sent as given: a token name, and no line breaks in the value."""
    return bool(name) and all(c in _TOKEN_CHARS for c in name) and "\r" not in value and "\n" not in value
