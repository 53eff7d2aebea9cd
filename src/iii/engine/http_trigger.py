"""The builtin ``http`` trigger type: an HTTP server whose routes call functions, bodies in channels.

A worker binds a function with ``registertrigger`` of type ``http`` and a config ``{"api_path":
"/users/:id", "http_method": "POST"}`` (and optionally ``middleware_function_ids``). Each matching request
becomes one exchange (:class:`HttpExchange`):

0. the binding's middleware functions are called in order (:mod:`iii.engine.http_middleware`); one of them
   may answer the request instead, and then nothing else happens;
1. two channels are created; the engine keeps the request channel's writer and the response channel's
   reader for itself (:mod:`iii.engine.http_ends`);
2. the function is called with the payload of the reference engine (``query_params``, ``path_params``,
   ``headers``, ``path``, ``method``, ``body`` for JSON, ``trigger``, and the refs ``request_body`` and
   ``response``), while the request body streams into ``request_body``;
3. the response is decided by whichever comes first: binary data on the response channel (a streamed
   response, with the status and headers of earlier ``set_status`` / ``set_headers`` messages), or a
   returned value (an envelope ``{status_code, headers?, body?}``, or any other value as a JSON body; see
   :func:`~iii.engine.http_responses.is_envelope`). A function that returns None answers through the
   channel; a clean end of it with no data is an empty body;
4. both channels are removed when the exchange ends.

Errors the engine answers itself have one JSON shape (:func:`~iii.engine.http_responses.error_response`):
404 unknown route, 405 wrong method, 413 body over the limit, 400 malformed JSON, 500 failed function, 502
function's worker gone or response stream broken, 503 no function registered, 504 no answer within
``--http-timeout-s`` of the whole request, or a request body that stopped moving that long.
Memory stays bounded in both directions: the channels' backpressure reaches the HTTP sockets.

aiohttp's low-level server does the HTTP/1.1 work (see docs/DESIGN.md for why aiohttp).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from iii.engine.channels import Channel, Role
from iii.engine.http_ends import FeedOutcome, RequestBodyFeeder, ResponseStream, StreamBroken
from iii.engine.http_middleware import UnknownAction, middleware_input, verdict
from iii.engine.http_responses import (
    BadResponse,
    error_response,
    header_allowed,
    is_json,
    new_error_id,
    query_params,
    request_headers,
    response_from_value,
)
from iii.engine.http_routes import (
    Match,
    Route,
    RouteError,
    RouteTable,
    WrongMethod,
    parse_method,
    parse_middleware,
    parse_pattern,
)
from iii.engine.triggers import Binding
from iii.protocol import close_codes, errors
from iii.protocol.messages import is_null

if TYPE_CHECKING:
    from iii.engine.core import Core

log = logging.getLogger("iii.engine.http")

TRIGGER_TYPE: Final = "http"
_CHANNEL_FRAMES: Final = 64
"""buffer_size of the two channels of an exchange (the reference engine's value)."""
_READ_BUFSIZE: Final = 256 * 1024
"""aiohttp's per-request body buffer; it stops reading the socket at twice this."""
_CALL_DEADLINE_S: Final = 100 * 365 * 24 * 3600.0
"""The invocation router's deadline for the call of a route's function: none in practice. The exchange
bounds the wait for an answer itself (:meth:`HttpExchange._await_decision`), and a streamed response may
take any time; the call is dropped when the exchange ends."""
_FUNCTION_CALL: Final = "http"
"""The caller-side invocation id of the call of the route's function (middleware calls have others)."""
_CONFIG_KEYS: Final = frozenset(("api_path", "http_method", "middleware_function_ids"))
"""The keys of an http binding's config this engine implements; others are logged as ignored."""
_STATUS_BY_ERROR: Final = {
    errors.TIMEOUT: 504,
    errors.FUNCTION_NOT_FOUND: 503,
    errors.INVOCATION_STOPPED: 502,
}


Answer = Callable[[], Awaitable[web.StreamResponse]]
"""How an exchange answers, once decided."""


class _ClientErrorsInOneLine(logging.Filter):
    """aiohttp logs a malformed request (the client's fault) as an ERROR with a traceback; a hostile client
    could fill the log that way. Such records become one INFO line naming the problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            # Only the kind of problem: aiohttp's message may quote the request, and a header can hold a token.
            problem = error.message.splitlines()[0].split(":", 1)[0] if error.message else type(error).__name__
            record.msg, record.args = "bad HTTP request: %s %s", (error.code, problem)
            record.exc_info = record.exc_text = None
        return True


_CLIENT_ERROR_FILTER: Final = _ClientErrorsInOneLine()


class HttpTriggers:
    """The ``http`` trigger type: its routes (the bindings) and the server that serves them."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.config = core.config
        self.routes = RouteTable()
        self.exchanges: set[HttpExchange] = set()
        self._server: web.Server | None = None
        self._listener: asyncio.Server | None = None
        self._slots: asyncio.Semaphore | None = None

    # --- the trigger type (a BuiltinProvider) ----------------------------------------------------------

    def activate(self, binding: Binding) -> str | None:
        try:
            config = msgspec.json.decode(binding.config)
            if not isinstance(config, dict):
                raise RouteError("an http trigger's config must be an object with 'api_path' and 'http_method'")
            pattern = parse_pattern(config.get("api_path"))
            method = parse_method(config.get("http_method"))
            middleware = parse_middleware(config.get("middleware_function_ids"))
        except (RouteError, msgspec.DecodeError, RecursionError) as exc:
            return str(exc)
        route = Route(binding.binding_id, method, pattern, binding.function_id, bytes(binding.metadata), middleware)
        conflict = self.routes.add(route)
        if conflict is not None:
            if conflict.pattern.path == pattern.path:
                return f"{method} {pattern.path} is already bound to {conflict.function_id}"
            # The reference engine's wording (the official SDKs' tests look for it).
            return (
                f"Route '{method} {pattern.path}' conflicts with already-registered route "
                f"'{method} {conflict.pattern.path}': routes with identical structure but different "
                "path-parameter names are not supported"
            )
        ignored = sorted(str(key) for key in config if key not in _CONFIG_KEYS)
        if ignored:
            # Accepted, as the reference would, but never silently: the binding does not do what these ask.
            log.warning(
                "http binding %s of %s: this engine does not implement config key(s) %s; ignored",
                binding.binding_id,
                binding.function_id,
                ", ".join(repr(key) for key in ignored),
            )
        via = f" (middleware {', '.join(middleware)})" if middleware else ""
        log.info("http route %s %s -> %s%s", method, pattern.path, binding.function_id, via)
        return None

    def deactivate(self, binding: Binding) -> None:
        route = self.routes.remove(binding.binding_id)
        if route is not None:
            log.info("http route %s %s removed", route.method, route.pattern.path)

    # --- the server ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``http_host:http_port``; raises ``OSError`` if the address cannot be bound."""
        self._slots = asyncio.Semaphore(self.config.http_max_concurrent_requests)
        logging.getLogger("aiohttp.server").addFilter(_CLIENT_ERROR_FILTER)  # adding twice is a no-op
        self._server = web.Server(
            self._handle,
            access_log=None,
            read_bufsize=_READ_BUFSIZE,
            max_field_size=self.config.http_max_header_bytes,
            max_line_size=self.config.http_max_header_bytes,
        )
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(self._server, self.config.http_host, self.config.http_port)

    @property
    def port(self) -> int:
        assert self._listener is not None, "http triggers not started"
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self.config.http_host}:{self.port}"

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, end the exchanges in progress (their clients see an error), close connections."""
        if self._listener is not None:
            self._listener.close()
        for exchange in list(self.exchanges):
            exchange.abort("the engine is shutting down")
        if self._server is not None:
            await self._server.shutdown(grace_s)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.wait_closed(), grace_s)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        response = await self._answer(request)
        self.core.metrics.http_responses[response.status] += 1
        return response

    async def _answer(self, request: web.BaseRequest) -> web.StreamResponse:
        found = self.routes.match(request.method, request.rel_url.raw_path)
        if found is None:
            return error_response(404, "NOT_FOUND", f"no route for {request.method} {request.path}")
        if isinstance(found, WrongMethod):
            allowed = ", ".join(found.allowed)
            return error_response(
                405, "METHOD_NOT_ALLOWED", f"{request.path} takes {allowed}, not {request.method}", {"Allow": allowed}
            )
        assert self._slots is not None
        async with self._slots:
            exchange = HttpExchange(self, request, found)
            self.exchanges.add(exchange)
            try:
                return await exchange.run()
            finally:
                self.exchanges.discard(exchange)
                exchange.finish()


class HttpExchange:
    """One request and its response: the function call, the two channels, and the decision of what to
    answer. It is the call's :class:`~iii.engine.peers.Caller`."""

    def __init__(self, triggers: HttpTriggers, request: web.BaseRequest, match: Match) -> None:
        self.triggers = triggers
        self.core = triggers.core
        self.write_paused = False  # a Caller: its answers go to an HTTP response, never held back
        self.request = request
        self.route = match.route
        self.path_params = match.path_params
        self.body_channel: Channel | None = None
        self.response_channel: Channel | None = None
        self.feeder: RequestBodyFeeder | None = None
        self.stream: ResponseStream | None = None
        self._pump: asyncio.Task[FeedOutcome] | None = None
        self._result: Any = None
        self._error: tuple[str, str] | None = None
        self._decision: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._middleware_call = ""
        """The caller-side invocation id of the middleware call in progress."""
        self._middleware_outcome: asyncio.Future[tuple[msgspec.Raw, msgspec.Raw]] | None = None

    # --- the exchange ----------------------------------------------------------------------------------

    async def run(self) -> web.StreamResponse:
        config = self.triggers.config
        request = self.request
        length = request.content_length
        if length is not None and length > config.http_max_body_bytes:
            return self._too_large(config.http_max_body_bytes)
        if self.route.middleware:
            refusal = await self._run_middleware()
            if refusal is not None:
                return refusal  # before 100 Continue: a client that asks first never sends the body
        if request.headers.get("Expect", "").lower() == "100-continue":
            # curl asks before sending a large body and waits a second for this if it does not come.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        json_body: bytes | None = None
        if is_json(request.content_type):
            limit = min(config.http_max_body_bytes, config.max_message_bytes // 2)
            json_body = await _read_up_to(request, limit)
            if json_body is None:
                return self._too_large(limit)
            if json_body.strip():
                try:
                    msgspec.json.decode(json_body)
                except (msgspec.DecodeError, RecursionError) as exc:
                    return error_response(400, "INVALID_JSON", f"the request body is not usable JSON: {exc}")
        self._open_channels()
        assert self.feeder is not None and self.body_channel is not None and self.response_channel is not None
        if json_body is not None:
            self.feeder.feed_all(json_body)
        elif request.body_exists:
            self._pump = asyncio.ensure_future(self.feeder.pump(request.content, config.http_max_body_bytes))
            self._pump.add_done_callback(self._on_pump_done)
        else:
            self.feeder.feed_all(b"")
        problem = self.core.start_call(
            self.route.function_id,
            msgspec.Raw(self._payload(json_body)),
            caller=self,
            caller_invocation_id=_FUNCTION_CALL,
            timeout_s=_CALL_DEADLINE_S,
            metadata=msgspec.Raw(self.route.metadata),
        )
        if problem is not None:
            self._error = problem
            self._decide()
        answer = await self._await_decision()
        if answer is None:
            return self._timeout()
        return await answer()

    async def _await_decision(self) -> Answer | None:
        """The answer once decided, or None after ``--http-timeout-s`` without progress: neither an answer
        nor a piece of the request body moving into its channel. So the clock runs from the call while
        there is no body, and from its last piece while there is one; a body that keeps moving (a slow
        client, or a function reading slowly) is never cut, whatever its size and duration."""
        assert self.feeder is not None
        timeout_s = self.triggers.config.http_timeout_s
        while True:
            moved_at = self.feeder.moved_at
            try:
                async with asyncio.timeout_at(moved_at + timeout_s):
                    return await asyncio.shield(self._decision)
            except TimeoutError:
                if self.feeder.moved_at == moved_at:
                    return None

    def finish(self) -> None:
        """Release what the exchange holds: the call, the body pump, both channels."""
        self.core.router.drop_caller(self)
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()
        if self.response_channel is not None:
            self.response_channel.abort(close_codes.READER_LOST, "the HTTP exchange ended")
        if self.body_channel is not None:
            self.body_channel.abort(close_codes.WRITER_LOST, "the HTTP exchange ended")

    def abort(self, reason: str) -> None:
        """End the exchange now (shutdown): the client gets 503 if nothing was sent, a cut stream if it was."""
        if not self._decision.done():
            self._decision.set_result(partial(self._error_answer, 503, "SHUTTING_DOWN", reason))
        if self.stream is not None:
            self.stream.close(close_codes.SERVICE_RESTART, reason)

    async def _run_middleware(self) -> web.StreamResponse | None:
        """Call the route's middleware in order (:mod:`iii.engine.http_middleware`); the response of the
        first that answers the request itself, or None when every one lets it through."""
        request = self.request
        payload = middleware_input(
            request.method, self.path_params, query_params(request.query), request_headers(request.headers)
        )
        timeout_s = self.triggers.config.http_timeout_s
        loop = asyncio.get_running_loop()
        for index, function_id in enumerate(self.route.middleware):
            self._middleware_call = f"middleware-{index}"
            self._middleware_outcome = outcome = loop.create_future()
            problem = self.core.start_call(
                function_id,
                msgspec.Raw(payload),
                caller=self,
                caller_invocation_id=self._middleware_call,
                timeout_s=timeout_s,
            )
            if problem is not None:
                code, message = problem
                return await self._error_answer(_STATUS_BY_ERROR.get(code, 500), code, message, function_id)
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.wait((outcome, self._decision), return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                outcome.cancel()
            if self._decision.done():  # the engine is shutting down
                return await self._decision.result()()
            if outcome.cancelled():
                message = f"middleware {function_id} did not answer within {timeout_s:g} s"
                return await self._error_answer(504, "MIDDLEWARE_TIMEOUT", message, function_id)
            result, error = outcome.result()
            if not is_null(error):
                code, message = _error_fields(error)
                status = 504 if code == errors.TIMEOUT else _STATUS_BY_ERROR.get(code, 500)
                code = "MIDDLEWARE_TIMEOUT" if code == errors.TIMEOUT else code
                return await self._error_answer(status, code, message, function_id)
            try:
                response = verdict(None if is_null(result) else msgspec.json.decode(result))
            except UnknownAction as exc:
                log.warning(
                    "http %s %s: middleware %s returned %s; going on", request.method, request.path, function_id, exc
                )
                continue
            except (BadResponse, msgspec.DecodeError) as exc:
                message = f"middleware {function_id} returned {exc}"
                return await self._error_answer(500, "INVALID_MIDDLEWARE_RESPONSE", message, function_id)
            if response is not None:
                return response
        return None

    # --- Caller ----------------------------------------------------------------------------------------

    def deliver_result(self, invocation_id: str, function_id: str, result: msgspec.Raw, error: msgspec.Raw) -> None:
        if invocation_id != _FUNCTION_CALL:
            waiting = self._middleware_outcome
            if invocation_id == self._middleware_call and waiting is not None and not waiting.done():
                waiting.set_result((result, error))
            return
        if not is_null(error):
            self._error = _error_fields(error)
            stream = self.stream
            if self._decision.done() and stream is not None and stream.started:
                # The function failed after its response began: the client must not see a clean end.
                stream.close(close_codes.WRITER_LOST, f"the function failed: {self._error[1]}")
        elif not is_null(result):
            try:
                self._result = msgspec.json.decode(result)
            except msgspec.DecodeError as exc:  # valid JSON, but no Python value holds it (1e999)
                self._error = ("INVALID_RESPONSE", f"{self.route.function_id} returned an unusable value: {exc}")
        self._decide()

    # --- deciding the answer ---------------------------------------------------------------------------

    def _decide(self) -> None:
        """Choose the answer once something has decided it; see the module docstring for the order."""
        if self._decision.done():
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
            else:
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
        """An error the engine answers; server errors are logged with their ``error_id``, naming the
        function (the route's, unless ``function_id`` names a middleware)."""
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
        assert stream is not None and self.response_channel is not None
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
            self.response_channel.on_reader_gone("the HTTP client disconnected")
        return response

    def _timeout(self) -> web.StreamResponse:
        timeout_s = self.triggers.config.http_timeout_s
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

    def _open_channels(self) -> None:
        manager = self.core.channels
        self.body_channel = manager.create(_CHANNEL_FRAMES, None)
        manager.take(self.body_channel, Role.WRITER)
        self.feeder = RequestBodyFeeder(self.body_channel)
        self.body_channel.attach(Role.WRITER, self.feeder)
        self.response_channel = manager.create(_CHANNEL_FRAMES, None)
        manager.take(self.response_channel, Role.READER)
        self.stream = ResponseStream(self.response_channel, self._decide)
        self.response_channel.attach(Role.READER, self.stream)

    def _on_pump_done(self, pump: asyncio.Task[FeedOutcome]) -> None:
        # A client that left mid-body is not answered early: the function reads what did arrive, then
        # sees the stream break, and the exchange ends with its call (or the timeout).
        if pump.cancelled() or self._decision.done():
            return
        if pump.result() is FeedOutcome.TOO_LARGE:
            limit = self.triggers.config.http_max_body_bytes
            self._decision.set_result(partial(_ready, self._too_large(limit)))

    def _payload(self, json_body: bytes | None) -> bytes:
        request = self.request
        assert self.body_channel is not None and self.response_channel is not None
        pattern = self.route.pattern.path
        payload = {
            "query_params": query_params(request.query),
            "path_params": self.path_params,
            "headers": request_headers(request.headers),
            "path": pattern,
            "method": request.method,
            "body": msgspec.Raw(json_body) if json_body and json_body.strip() else None,
            "trigger": {"type": TRIGGER_TYPE, "path": pattern, "method": request.method},
            "request_body": {
                "channel_id": self.body_channel.channel_id,
                "access_key": self.body_channel.reader_key,
                "direction": "read",
            },
            "response": {
                "channel_id": self.response_channel.channel_id,
                "access_key": self.response_channel.writer_key,
                "direction": "write",
            },
        }
        return msgspec.json.encode(payload)


async def _ready(response: web.StreamResponse) -> web.StreamResponse:
    return response


async def _read_up_to(request: web.BaseRequest, limit: int) -> bytes | None:
    """The whole body, or None as soon as it grows past ``limit`` bytes."""
    parts = []
    size = 0
    while chunk := await request.content.read(_READ_BUFSIZE):
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _error_fields(error: msgspec.Raw) -> tuple[str, str]:
    try:
        value = msgspec.json.decode(error)
    except (msgspec.DecodeError, RecursionError):
        value = None
    if not isinstance(value, dict):
        return errors.INVOCATION_FAILED, "the function failed"
    return str(value.get("code") or errors.INVOCATION_FAILED), str(value.get("message") or "the function failed")


def _cut(request: web.BaseRequest) -> None:
    """Close the connection under a started response, so the client sees it incomplete, not finished."""
    transport = request.transport
    if transport is not None:
        transport.abort()
