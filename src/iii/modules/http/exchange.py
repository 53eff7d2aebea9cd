"""One HTTP request and its response: :class:`HttpExchange` (see :mod:`iii.modules.http` for the steps)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import web

from iii.modules.api import InvocationError, ModuleChannel, ModuleReader
from iii.modules.http.bodies import FeedOutcome, RequestBody, ResponseStream, StreamBroken
from iii.modules.http.middleware import UnknownAction, middleware_input, verdict
from iii.modules.http.responses import (
    BadResponse,
    error_response,
    header_allowed,
    is_json,
    new_error_id,
    query_params,
    request_headers,
    response_from_value,
)
from iii.modules.http.routes import Match
from iii.protocol import errors

if TYPE_CHECKING:
    from iii.modules.http.module import HttpModule

log = logging.getLogger("iii.modules.http")

TRIGGER_TYPE: Final = "http"
CHANNEL_FRAMES: Final = 64
"""buffer_size of the two channels of an exchange (the reference engine's value)."""
READ_BUFSIZE: Final = 256 * 1024
"""aiohttp's per-request body buffer; it stops reading the socket at twice this."""
_CALL_DEADLINE_S: Final = 100 * 365 * 24 * 3600.0
"""The deadline given to the call of a route's function: none in practice. The exchange bounds the wait for
an answer itself (:meth:`HttpExchange._await_decision`), and a streamed response may take any time; the call
is dropped when the exchange ends."""
_FAILED: Final = "the function failed"
_STATUS_BY_ERROR: Final = {
    errors.TIMEOUT: 504,
    errors.FUNCTION_NOT_FOUND: 503,
    errors.INVOCATION_STOPPED: 502,
}


Answer = Callable[[], Awaitable[web.StreamResponse]]
"""How an exchange answers, once decided."""


class HttpExchange:
    """One request and its response: the middleware and function calls, the two channels, and the decision of
    what to answer."""

    def __init__(
        self,
        module: HttpModule,
        request: web.BaseRequest,
        match: Match,
        traceparent: str | None = None,
        baggage: str | None = None,
    ) -> None:
        self.module = module
        self.traceparent = traceparent
        """The trace context of the exchange's calls (its span's, when the engine records spans)."""
        self.baggage = baggage
        self.settings = module.settings
        self.request = request
        self.route = match.route
        self.path_params = match.path_params
        self.body_channel: ModuleChannel | None = None
        self.response_channel: ModuleChannel | None = None
        self.body: RequestBody | None = None
        self.reader: ModuleReader | None = None
        self.stream: ResponseStream | None = None
        self._pump: asyncio.Task[FeedOutcome] | None = None
        self._call: asyncio.Future[Any] | None = None
        self._call_seen = False
        """The call's outcome has been taken into account (:meth:`_on_call_done`)."""
        self._result: Any = None
        self._error: tuple[str, str] | None = None
        self._decision: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

    # --- the exchange ----------------------------------------------------------------------------------

    async def run(self) -> web.StreamResponse:
        settings = self.settings
        request = self.request
        length = request.content_length
        if length is not None and length > settings.max_body_bytes:
            return self._too_large(settings.max_body_bytes)
        if self.route.middleware:
            refusal = await self._run_middleware()
            if refusal is not None:
                return refusal  # before 100 Continue: a client that asks first never sends the body
        if request.headers.get("Expect", "").lower() == "100-continue":
            # curl asks before sending a large body and waits a second for this if it does not come.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        json_body: bytes | None = None
        json_value: Any = None
        if is_json(request.content_type):
            limit = min(settings.max_body_bytes, settings.max_json_bytes)
            json_body = await _read_up_to(request, limit)
            if json_body is None:
                return self._too_large(limit)
            if json_body.strip():
                try:
                    json_value = msgspec.json.decode(json_body)
                except (msgspec.DecodeError, RecursionError) as exc:
                    return error_response(400, "INVALID_JSON", f"the request body is not usable JSON: {exc}")
        body_channel, response_channel = await self._open_channels()
        body = self.body
        assert body is not None
        if json_body is not None:
            body.feed_all(json_body)
        elif request.body_exists:
            self._pump = asyncio.ensure_future(body.pump(request.content, settings.max_body_bytes))
            self._pump.add_done_callback(self._on_pump_done)
        else:
            body.feed_all(b"")
        route = self.route
        call = self.module.host.invoke(
            route.function_id,
            self._payload(json_value, body_channel, response_channel),
            timeout_s=_CALL_DEADLINE_S,
            metadata=route.metadata,
            traceparent=self.traceparent,
            baggage=self.baggage,
        )
        self._call = asyncio.ensure_future(call)  # inside the engine, already a future: the call has started
        self._call.add_done_callback(self._on_call_done)
        answer = await self._await_decision()
        if answer is None:
            return self._timeout()
        return await answer()

    async def _await_decision(self) -> Answer | None:
        """The answer once decided, or None after ``timeout_s`` without progress: neither an answer nor a piece
        of the request body moving into its channel. So the clock runs from the call while there is no body,
        and from its last piece while there is one; a body that keeps moving (a slow client, or a function
        reading slowly) is never cut, whatever its size and duration."""
        body = self.body
        assert body is not None
        timeout_s = self.settings.timeout_s
        while True:
            moved_at = body.moved_at
            try:
                async with asyncio.timeout_at(moved_at + timeout_s):
                    return await asyncio.shield(self._decision)
            except TimeoutError:
                if body.moved_at == moved_at:
                    return None

    def finish(self) -> None:
        """Release what the exchange holds: the call, the body pump, both channels."""
        if self._call is not None and not self._call.done():
            self._call.cancel()  # the host drops the pending call: a late result goes nowhere
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
        if self.reader is not None:
            self.reader.close("the HTTP exchange ended")
        for channel in (self.body_channel, self.response_channel):
            if channel is not None:
                channel.release("the HTTP exchange ended")

    def abort(self, reason: str) -> None:
        """End the exchange now (shutdown): the client gets 503 if nothing was sent, a cut stream if it was."""
        if not self._decision.done():
            self._decision.set_result(partial(self._error_answer, 503, "SHUTTING_DOWN", reason))
        if self.reader is not None:
            self.reader.close(reason)

    async def _run_middleware(self) -> web.StreamResponse | None:
        """Call the route's middleware in order (:mod:`iii.modules.http.middleware`); the response of the first
        that answers the request itself, or None when every one lets it through."""
        request = self.request
        payload = middleware_input(
            request.method, self.path_params, query_params(request.query), request_headers(request.headers)
        )
        timeout_s = self.settings.timeout_s
        for function_id in self.route.middleware:
            call = asyncio.ensure_future(
                self.module.host.invoke(
                    function_id, payload, timeout_s=timeout_s, traceparent=self.traceparent, baggage=self.baggage
                )
            )
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.wait((call, self._decision), return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                pass
            answered = call.done()
            if not answered:
                call.cancel()  # the host drops the pending call
            if self._decision.done():  # the engine is shutting down
                return await self._decision.result()()
            if not answered:
                message = f"middleware {function_id} did not answer within {timeout_s:g} s"
                return await self._error_answer(504, "MIDDLEWARE_TIMEOUT", message, function_id)
            try:
                result = call.result()
            except InvocationError as exc:
                status = 504 if exc.code == errors.TIMEOUT else _STATUS_BY_ERROR.get(exc.code, 500)
                code = "MIDDLEWARE_TIMEOUT" if exc.code == errors.TIMEOUT else exc.code
                return await self._error_answer(status, code, exc.message or _FAILED, function_id)
            try:
                response = verdict(result)
            except UnknownAction as exc:
                log.warning(
                    "http %s %s: middleware %s returned %s; going on", request.method, request.path, function_id, exc
                )
                continue
            except BadResponse as exc:
                message = f"middleware {function_id} returned {exc}"
                return await self._error_answer(500, "INVALID_MIDDLEWARE_RESPONSE", message, function_id)
            if response is not None:
                return response
        return None

    # --- the call's outcome ----------------------------------------------------------------------------

    def _on_call_done(self, call: asyncio.Future[Any]) -> None:
        if call.cancelled() or self._call_seen:
            return
        self._call_seen = True
        failure = call.exception()
        if isinstance(failure, InvocationError):
            self._error = (failure.code, failure.message or _FAILED)
        elif failure is not None:
            log.error("the call of %s failed in the module", self.route.function_id, exc_info=failure)
            self._error = (errors.INVOCATION_FAILED, f"{type(failure).__name__}: {failure}")
        else:
            self._result = call.result()
        if self._error is not None:
            stream = self.stream
            if self._decision.done() and stream is not None and stream.started and self.reader is not None:
                # The function failed after its response began: the client must not see a clean end.
                self.reader.close(f"the function failed: {self._error[1]}")
        self._decide()

    # --- deciding the answer ---------------------------------------------------------------------------

    def _decide(self) -> None:
        """Choose the answer once something has decided it; see the package docstring for the order."""
        if self._decision.done():
            return
        call = self._call
        if call is not None and call.done() and not self._call_seen:
            # The call's outcome is known but its callback has not run yet: it arrived first, so it counts first.
            self._on_call_done(call)
            return
        stream = self.stream
        answer: Answer | None = None
        if stream is not None and stream.started:
            answer = self._stream_answer
        elif self._error is not None:
            code, message = self._error
            answer = partial(self._error_answer, _STATUS_BY_ERROR.get(code, 500), code, message)
        elif self._result is not None:
            answer = partial(self._value_answer, self._result)
        elif stream is not None and stream.end is not None:
            if stream.clean_end:
                answer = self._stream_answer
            elif self._call_seen:
                # A broken stream is the answer only once the call has ended without one: the function's SDK
                # releases or aborts the writer it left when its invocation ends, and in a worker that news may
                # come before the result (they travel on different sockets).
                broken = f"the function's response stream broke: {stream.end[1]}"
                answer = partial(self._error_answer, 502, "RESPONSE_STREAM_BROKEN", broken)
        if answer is not None:
            self._decision.set_result(answer)

    async def _value_answer(self, value: Any) -> web.StreamResponse:
        try:
            return response_from_value(value)
        except BadResponse as exc:
            return await self._error_answer(500, "INVALID_RESPONSE", f"{self.route.function_id} returned {exc}")

    async def _error_answer(
        self, status: int, code: str, message: str, function_id: str | None = None
    ) -> web.StreamResponse:
        """An error the module answers; server errors are logged with their ``error_id``, naming the function
        (the route's, unless ``function_id`` names a middleware)."""
        if status < 500:
            return error_response(status, code, message)
        error_id = new_error_id()
        log.warning(
            "http %s %s -> %s failed: %d %s %s error_id=%s",
            self.request.method,
            self.request.path,
            function_id or self.route.function_id,
            status,
            code,
            message,
            error_id,
        )
        return error_response(status, code, message, error_id=error_id)

    async def _stream_answer(self) -> web.StreamResponse:
        """Send the head decided by the control messages, then the body as it arrives (chunked)."""
        stream = self.stream
        assert stream is not None and self.reader is not None
        response = web.StreamResponse(status=stream.status)
        for name, value in stream.headers.items():
            if header_allowed(name, value):
                response.headers[name] = value
            else:
                log.warning("%s: skipped response header %r that cannot be sent", self.route.function_id, name)
        head_only = self.request.method == "HEAD"  # the function streams as for GET; the body is dropped
        if "content-length" not in response.headers and not head_only:
            response.enable_chunked_encoding()
        try:
            await response.prepare(self.request)
            while (chunk := await stream.next_chunk()) is not None:
                if not head_only:
                    await response.write(chunk)
            await response.write_eof()
        except StreamBroken as exc:
            log.warning("http %s %s: %s; the client sees a cut response", self.request.method, self.request.path, exc)
            _cut(self.request)
        except (ConnectionError, RuntimeError):
            # The client went away: the function's writer learns that its reader is gone.
            self.reader.close("the HTTP client disconnected")
        return response

    def _timeout(self) -> web.StreamResponse:
        timeout_s = self.settings.timeout_s
        function_id = self.route.function_id
        if self._pump is not None and not self._pump.done():
            message = f"the request body to {function_id} made no progress for {timeout_s:g} s"
        else:
            message = f"{function_id} did not answer within {timeout_s:g} s of receiving the whole request"
        return error_response(504, "TIMEOUT", message)

    def _too_large(self, limit: int) -> web.StreamResponse:
        response = error_response(413, "BODY_TOO_LARGE", f"the request body is over the limit of {limit} bytes")
        response.force_close()  # the rest of the body is not read
        return response

    # --- helpers ---------------------------------------------------------------------------------------

    async def _open_channels(self) -> tuple[ModuleChannel, ModuleChannel]:
        host = self.module.host
        self.body_channel = body_channel = await host.create_channel(CHANNEL_FRAMES)
        self.body = RequestBody(body_channel.writer())
        self.response_channel = response_channel = await host.create_channel(CHANNEL_FRAMES)
        self.reader = response_channel.reader()
        self.stream = ResponseStream(self.reader, self._decide)
        self.stream.watch()
        return body_channel, response_channel

    def _on_pump_done(self, pump: asyncio.Task[FeedOutcome]) -> None:
        # A client that left mid-body is not answered early: the function reads what did arrive, then sees the
        # stream break, and the exchange ends with its call (or the timeout).
        if pump.cancelled() or self._decision.done():
            return
        if pump.result() is FeedOutcome.TOO_LARGE:
            self._decision.set_result(partial(_ready, self._too_large(self.settings.max_body_bytes)))

    def _payload(self, json_value: Any, body_channel: ModuleChannel, response_channel: ModuleChannel) -> Any:
        request = self.request
        pattern = self.route.pattern.path
        return {
            "query_params": query_params(request.query),
            "path_params": self.path_params,
            "headers": request_headers(request.headers),
            "path": pattern,
            "method": request.method,
            "body": json_value,
            "trigger": {"type": TRIGGER_TYPE, "path": pattern, "method": request.method},
            "request_body": body_channel.reader_ref,
            "response": response_channel.writer_ref,
        }


async def _ready(response: web.StreamResponse) -> web.StreamResponse:
    return response


async def _read_up_to(request: web.BaseRequest, limit: int) -> bytes | None:
    """The whole body, or None as soon as it grows past ``limit`` bytes."""
    parts = []
    size = 0
    while chunk := await request.content.read(READ_BUFSIZE):
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _cut(request: web.BaseRequest) -> None:
    """Close the connection under a started response, so the client sees it incomplete, not finished."""
    transport = request.transport
    if transport is not None:
        transport.abort()
