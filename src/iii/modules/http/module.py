"""The http module: the ``http`` trigger type and the HTTP server whose routes are its bindings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from iii.modules.api import BindingInfo, MetricSample, ModuleHost, ModuleSpan
from iii.modules.http.exchange import READ_BUFSIZE, TRIGGER_TYPE, HttpExchange
from iii.modules.http.responses import error_response
from iii.modules.http.routes import (
    Route,
    RouteError,
    RouteTable,
    WrongMethod,
    parse_method,
    parse_middleware,
    parse_pattern,
)
from iii.modules.http.settings import HttpSettings

log = logging.getLogger("iii.modules.http")

DESCRIPTION: Final = "HTTP requests to a route (api_path, http_method)"
_CONFIG_KEYS: Final = frozenset(("api_path", "http_method", "middleware_function_ids", "description", "metadata"))
"""The keys of an http binding's config this module implements; others are logged as ignored. ``description`` and
``metadata`` (tags, say) only describe the route, as in the reference's examples: there is nothing to ignore."""


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


class HttpModule:
    """The ``http`` trigger type: its routes (the bindings) and the server that serves them."""

    name = "http"

    def __init__(self, settings: HttpSettings | None = None) -> None:
        self.settings = settings or HttpSettings()
        self.routes = RouteTable()
        self.exchanges: set[HttpExchange] = set()
        self.responses: Counter[int] = Counter()
        """Responses sent, by status."""
        self._host: ModuleHost | None = None
        self._server: web.Server | None = None
        self._listener: asyncio.Server | None = None
        self._slots: asyncio.Semaphore | None = None

    @property
    def host(self) -> ModuleHost:
        assert self._host is not None, "the http module has not started"
        return self._host

    # --- Module ----------------------------------------------------------------------------------------

    async def start(self, host: ModuleHost) -> None:
        """Listen on ``host:port`` and provide the ``http`` trigger type; raises ``OSError`` naming the address
        if it cannot be bound."""
        settings = self.settings
        self._host = host
        self._slots = asyncio.Semaphore(settings.max_concurrent_requests)
        logging.getLogger("aiohttp.server").addFilter(_CLIENT_ERROR_FILTER)  # adding twice is a no-op
        self._server = web.Server(
            self._handle,
            access_log=None,
            read_bufsize=READ_BUFSIZE,
            max_field_size=settings.max_header_bytes,
            max_line_size=settings.max_header_bytes,
        )
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_server(self._server, settings.host, settings.port)
        except OSError as exc:
            where = f"{settings.host}:{settings.port}"
            raise OSError(exc.errno, f"cannot serve HTTP triggers on {where}: {exc.strerror or exc}") from None
        host.register_trigger_type(TRIGGER_TYPE, self, description=DESCRIPTION)

    async def stop(self) -> None:
        """Stop accepting, end the exchanges in progress (their clients see an error), close connections."""
        grace_s = self.settings.shutdown_grace_s
        if self._listener is not None:
            self._listener.close()
        for exchange in list(self.exchanges):
            exchange.abort("the engine is shutting down")
        if self._server is not None:
            await self._server.shutdown(grace_s)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._listener.wait_closed(), grace_s)

    def metrics(self) -> Iterable[MetricSample]:
        for status, count in sorted(self.responses.items()):
            yield MetricSample(
                "http_responses", count, {"status": str(status)}, "HTTP trigger responses by status", "counter"
            )
        yield MetricSample("http_requests_in_progress", len(self.exchanges), help="HTTP requests being served")

    def snapshot(self) -> Mapping[str, Any]:
        routes = sorted(self.routes.routes(), key=lambda r: (r.pattern.path, r.method))
        return {
            "url": self.url if self._listener is not None else None,
            "routes": [
                {"method": r.method, "path": r.pattern.path, "function_id": r.function_id, "middleware": r.middleware}
                for r in routes
            ],
            "requests_in_progress": len(self.exchanges),
        }

    # --- where it listens ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._listener is not None, "the http module has not started"
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    # --- the trigger type (a TriggerProvider) ----------------------------------------------------------

    def activate(self, binding: BindingInfo) -> str | None:
        config = binding.config
        try:
            pattern = parse_pattern(config.get("api_path"))
            method = parse_method(config.get("http_method"))
            middleware = parse_middleware(config.get("middleware_function_ids"))
        except RouteError as exc:
            return str(exc)
        route = Route(binding.binding_id, method, pattern, binding.function_id, binding.metadata, middleware)
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

    def deactivate(self, binding: BindingInfo) -> None:
        route = self.routes.remove(binding.binding_id)
        if route is not None:
            log.info("http route %s %s removed", route.method, route.pattern.path)

    # --- the server ------------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        response = await self._answer(request)
        self.responses[response.status] += 1
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
            span = self._exchange_span(request, found.route)
            traceparent = request.headers.get("traceparent") if span is None else span.traceparent
            exchange = HttpExchange(self, request, found, traceparent, request.headers.get("baggage"))
            self.exchanges.add(exchange)
            response = None
            try:
                response = await exchange.run()
                return response
            finally:
                self.exchanges.discard(exchange)
                exchange.finish()
                if span is not None:
                    _end_exchange_span(span, response)

    def _exchange_span(self, request: web.BaseRequest, route: Route) -> ModuleSpan | None:
        """The span of one exchange, as the reference names it (``GET /users/:id``), a child of the request's
        ``traceparent`` header (a new trace without one); None when the engine records no spans."""
        internal = route.function_id.startswith("engine::")
        attributes = [
            ("http.request.method", request.method),
            ("http.route", route.pattern.path),
            ("url.path", request.path),
            ("url.query", request.query_string),
            ("url.scheme", request.scheme),
            ("server.address", request.host),
            ("user_agent.original", request.headers.get("User-Agent", "")),
            ("function_id", route.function_id),
            ("iii.function.kind", "internal" if internal else "user"),
        ]
        return self.host.start_span(
            f"{request.method} {route.pattern.path}", request.headers.get("traceparent"), attributes, root=True
        )


def _end_exchange_span(span: ModuleSpan, response: web.StreamResponse | None) -> None:
    """End an exchange's span with its response's status: a 5xx, or no response at all, is an error (OpenTelemetry's
    rule for a server span; a 4xx is the client's)."""
    if response is None:
        span.end(("http_exchange_failed", "the exchange ended without a response (the client went away)"))
        return
    span.set("http.response.status_code", str(response.status))
    span.end((f"http_{response.status}", f"HTTP {response.status}") if response.status >= 500 else None)
