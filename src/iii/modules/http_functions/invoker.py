"""One call of an HTTP-invoked function: the request the reference engine sends, and what its answer means.

The request: the call's payload as a JSON body, ``Content-Type: application/json``, the function's own headers,
then the engine's ``x-iii-Function-Path`` (the function id), ``x-iii-Invocation-ID`` (a fresh UUID) and
``x-iii-Timestamp`` (Unix seconds), then the credentials: ``Authorization: Bearer <token>``, ``<header>:
<key>``, or ``x-iii-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>:<base64 of the body>">``. A header of
the function's with the name of one the engine sets is replaced by the engine's.

The answer (:func:`outcome`): a 2xx body is the result (JSON; empty is no result; anything else
``invalid_response``); another status under 400 is not an error (its body is the result if it is JSON, else no
result); 400 and above is an error, ``{"error": {"code", "message"}}`` from the body or ``http_error`` with
``HTTP <status> <reason>``. Redirects are not followed (a 3xx is an answer like any other under 400), as the
reference does: a function's URL is checked by the URL policy, and the place a redirect points to would not be.

Failures: ``http_request_failed`` (no connection, or no response within the timeout), ``http_response_failed``
(the body could not be read, or is over the size limit), ``url_validation_failed`` (the host name resolves to a
private address). Their messages never hold the credentials: a message that would (an endpoint that echoes
them in its error) has them replaced by ``<redacted>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from typing import Any, Final

import aiohttp
import msgspec
from multidict import CIMultiDict

from iii.modules.api import FunctionError

from .endpoint import Credentials, Endpoint
from .policy import URL_VALIDATION_FAILED, PrivateAddressError

HTTP_REQUEST_FAILED: Final = "http_request_failed"
HTTP_RESPONSE_FAILED: Final = "http_response_failed"
INVALID_RESPONSE: Final = "invalid_response"
HTTP_ERROR: Final = "http_error"
REDACTED: Final = "<redacted>"

_decoder = msgspec.json.Decoder()


def request_headers(
    endpoint: Endpoint, function_id: str, body: bytes, *, timestamp: int, invocation_id: str
) -> CIMultiDict[str]:
    """The headers of one call (see the module docstring)."""
    headers: CIMultiDict[str] = CIMultiDict()
    headers["Content-Type"] = "application/json"
    for name, value in endpoint.headers:
        headers[name] = value
    headers["x-iii-Function-Path"] = function_id
    headers["x-iii-Invocation-ID"] = invocation_id
    headers["x-iii-Timestamp"] = str(timestamp)
    credentials = endpoint.credentials
    if credentials is not None:
        if credentials.type == "bearer":
            headers["Authorization"] = f"Bearer {credentials.secret}"
        elif credentials.type == "api_key":
            headers[credentials.header] = credentials.secret
        else:
            headers["x-iii-Signature"] = signature(body, credentials.secret, timestamp)
    return headers


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """``sha256=<hex>``: the HMAC-SHA256, keyed by ``secret``, of ``"<timestamp>:<base64 of body>"``."""
    signed = f"{timestamp}:{base64.b64encode(body).decode()}".encode()
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def outcome(status: int, reason: str, body: bytes) -> Any:
    """The result an answer means, or the :class:`FunctionError` it raises (see the module docstring)."""
    if 200 <= status < 300:
        if not body:
            return None
        try:
            return _decoder.decode(body)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise FunctionError(INVALID_RESPONSE, f"HTTP {status}: the body is not JSON: {exc}") from None
    if status < 400:
        try:
            return _decoder.decode(body) if body else None
        except (msgspec.DecodeError, RecursionError):
            return None
    code, message = HTTP_ERROR, f"HTTP {status} {reason}".rstrip()
    try:
        answer = _decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        answer = None
    if isinstance(answer, dict) and "error" in answer:
        error = answer["error"]
        fields = error if isinstance(error, dict) else {}
        given_code, given_message = fields.get("code"), fields.get("message")
        code = given_code if isinstance(given_code, str) else HTTP_ERROR
        message = given_message if isinstance(given_message, str) else "HTTP request failed"
    raise FunctionError(code, message)


async def call(
    session: aiohttp.ClientSession, endpoint: Endpoint, function_id: str, data: Any, *, max_response_bytes: int
) -> Any:
    """Call ``endpoint`` with ``data``; the result, or :class:`FunctionError`. No timeout of its own: the
    caller bounds it. Messages are scrubbed of the endpoint's credentials."""
    try:
        return await _exchange(session, endpoint, function_id, data, max_response_bytes)
    except FunctionError as error:
        raise scrubbed(error, endpoint.credentials) from None


async def _exchange(
    session: aiohttp.ClientSession, endpoint: Endpoint, function_id: str, data: Any, max_response_bytes: int
) -> Any:
    body = msgspec.json.encode(data)
    headers = request_headers(endpoint, function_id, body, timestamp=int(time.time()), invocation_id=str(uuid.uuid4()))
    try:
        response = await session.request(
            endpoint.method, endpoint.url, data=body, headers=headers, allow_redirects=False
        )
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, PrivateAddressError):
            raise FunctionError(URL_VALIDATION_FAILED, str(exc.os_error)) from None
        raise FunctionError(HTTP_REQUEST_FAILED, _describe(exc)) from None
    except aiohttp.ClientError as exc:
        raise FunctionError(HTTP_REQUEST_FAILED, _describe(exc)) from None
    async with response:
        if response.content_length is not None and response.content_length > max_response_bytes:
            raise FunctionError(HTTP_RESPONSE_FAILED, _too_big(response.status, max_response_bytes))
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > max_response_bytes:
                    raise FunctionError(HTTP_RESPONSE_FAILED, _too_big(response.status, max_response_bytes))
                chunks.append(chunk)
        except aiohttp.ClientError as exc:
            raise FunctionError(HTTP_RESPONSE_FAILED, _describe(exc)) from None
        return outcome(response.status, response.reason or "", b"".join(chunks))


def _too_big(status: int, limit: int) -> str:
    return f"HTTP {status}: the body is over {limit} bytes (max_response_bytes)"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def scrubbed(error: FunctionError, credentials: Credentials | None) -> FunctionError:
    """``error`` with the credentials' value replaced by ``<redacted>`` in its code and message."""
    if credentials is None or not credentials.secret:
        return error
    secret = credentials.secret
    if secret not in error.code and secret not in error.message:
        return error
    return FunctionError(error.code.replace(secret, REDACTED), error.message.replace(secret, REDACTED))
