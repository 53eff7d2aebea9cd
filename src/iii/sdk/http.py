"""Answering HTTP from a function bound to the engine's ``http`` trigger type.

A function bound with ``register_trigger({"type": "http", "function_id": ..., "config": {"api_path":
"/files/:name", "http_method": "PUT"}})`` receives the request as its payload. :meth:`HttpRequest.of`
gives it a typed view: the request body as a :class:`~iii.sdk.channels.ChannelReader` and the response
as a :class:`StreamResponse`. A function answers in one of two ways:

* return :func:`http_response` (``{"status_code", "headers", "body"}``), or any other JSON value (a 200
  JSON response; an object is taken for a response only with ``status_code`` and no other keys than these
  three, so data with a ``body`` or ``headers`` field is sent as data);
* or stream: set the status and headers, write the body (any size, backpressured), close, and return
  None. Server-sent events are :meth:`StreamResponse.send_event` after a ``text/event-stream`` header.

Every method follows the dual-mode rule (:mod:`iii.sdk.portal`): in ``async def`` code each returns an
awaitable, in plain code the backpressured ``write`` blocks and the rest return at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from iii.errors import UsageError
from iii.sdk.channels import ChannelReader, ChannelWriter, WritableStream


def http_response(body: Any = None, status_code: int = 200, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A plain response to return from a function: JSON ``body`` unless ``headers`` set another
    ``Content-Type`` (then a string body is sent as it is)."""
    response: dict[str, Any] = {"status_code": status_code, "body": body}
    if headers:
        response["headers"] = dict(headers)
    return response


class StreamResponse:
    """The response of an HTTP request, streamed through the request's response channel.

    Set the status and headers first (they are sent with the first body bytes; later calls are ignored
    by the engine), then ``write`` the body and ``close``. Closing without writing sends an empty body.
    """

    def __init__(self, writer: ChannelWriter) -> None:
        self._writer = writer

    @property
    def writer(self) -> ChannelWriter:
        """The underlying channel writer."""
        return self._writer

    @property
    def stream(self) -> WritableStream:
        """Node-style ``write`` / ``end`` on the body."""
        return self._writer.stream

    def status(self, status_code: int) -> Any:
        """Set the status code (100-599). Fire-and-forget; awaitable in async code."""
        if isinstance(status_code, bool) or not isinstance(status_code, int) or not 100 <= status_code <= 599:
            raise UsageError(f"an HTTP status code is an integer from 100 to 599, got {status_code!r}")
        return self._writer.send_message(json.dumps({"type": "set_status", "status_code": status_code}))

    def headers(self, headers: Mapping[str, str]) -> Any:
        """Set response headers (merged with earlier ones). Fire-and-forget; awaitable in async code."""
        return self._writer.send_message(json.dumps({"type": "set_headers", "headers": dict(headers)}))

    def write(self, data: bytes | bytearray | memoryview | str) -> Any:
        """Send body bytes (a ``str`` is sent as UTF-8). Backpressured: blocks in sync code, awaitable in
        async code."""
        return self._writer.write(data.encode() if isinstance(data, str) else data)

    def send_event(self, data: Any, event: str | None = None, event_id: str | None = None) -> Any:
        """Send one server-sent event: ``data`` (a string, or any JSON value), an optional ``event`` name
        and ``id``. Set ``Content-Type: text/event-stream`` before the first event."""
        text = data if isinstance(data, str) else json.dumps(data)
        lines = []
        if event_id is not None:
            lines.append(f"id: {_one_line(event_id, 'event_id')}")
        if event is not None:
            lines.append(f"event: {_one_line(event, 'event')}")
        lines.extend(f"data: {line}" for line in text.split("\n"))
        return self.write("\n".join(lines) + "\n\n")

    def close(self) -> Any:
        """End the response (after everything written). Fire-and-forget; awaitable in async code."""
        return self._writer.close()

    async def close_async(self) -> None:
        """End the response and wait until the engine has all of it."""
        await self._writer.close_async()


def _one_line(value: str, what: str) -> str:
    if "\n" in value or "\r" in value:
        raise UsageError(f"an SSE {what} cannot contain line breaks")
    return value


@dataclass
class HttpRequest:
    """An HTTP request as a function bound to an ``http`` trigger receives it."""

    method: str
    path: str
    """The route's pattern (``/files/:name``), as in the reference engine."""
    path_params: dict[str, str]
    query_params: dict[str, str | list[str]]
    headers: dict[str, str]
    """Header names in lower case."""
    body: Any
    """The parsed body of a JSON request (None otherwise; read ``request_body`` for other bodies)."""
    request_body: ChannelReader
    response: StreamResponse

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> HttpRequest:
        """The request in a handler's payload (the SDK has already turned its refs into channel ends)."""
        reader, writer = data.get("request_body"), data.get("response")
        if not isinstance(reader, ChannelReader) or not isinstance(writer, ChannelWriter):
            raise UsageError("HttpRequest.of takes the payload of a function called by an http trigger")
        return cls(
            method=str(data.get("method", "")),
            path=str(data.get("path", "")),
            path_params=dict(data.get("path_params") or {}),
            query_params=dict(data.get("query_params") or {}),
            headers=dict(data.get("headers") or {}),
            body=data.get("body"),
            request_body=reader,
            response=StreamResponse(writer),
        )

    def header(self, name: str, default: str | None = None) -> str | None:
        """A request header by name, in any case."""
        return self.headers.get(name.lower(), default)
