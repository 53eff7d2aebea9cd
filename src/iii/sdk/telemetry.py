"""The worker's own telemetry: a span around every function execution, its log records, sent to the engine.

What is recorded, as the official SDKs do:

* a span ``execute <function id>`` (kind internal) around every handler run, the child of the call's
  ``traceparent`` (a new trace without one), status ok, or error with the error's message and an ``exception``
  event; the call's baggage entries become its attributes;
* the calls a handler makes carry ``traceparent`` naming that span, and the call's baggage unchanged
  (:mod:`iii.sdk.calls`); with telemetry off they carry the call's own ``traceparent``, so a trace is not cut;
* Python ``logging`` records of the program (not the SDK's own nor its transport's) and :class:`Logger` lines, with the
  trace and span ids of the handler they are made in.

How it is sent: records are queued in memory (bounded: :data:`MAX_QUEUED` spans and as many log records; more
are dropped and counted in :attr:`Exporter.dropped`), and a flush on the SDK loop, ``flush_interval_s`` after the
first record of a batch, encodes them (:mod:`iii.protocol.otlp`) and sends them on a socket of their own to the
engine's ``/otel``, opened when there is something to send. A call never waits for telemetry: recording a span is
a few attribute stores and a deque append. An engine that cannot be reached, or has no ``/otel``, is retried
with backoff, quietly (debug log lines); meanwhile what does not fit in the queue is dropped and counted.

Settings (:class:`TelemetrySettings`) come from ``InitOptions.otel`` (a mapping, or the official SDK's
``OtelConfig``), else the official SDKs' environment variables: ``OTEL_ENABLED=false`` turns it all off,
``OTEL_SERVICE_NAME`` names the service (default: the worker's name).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import threading
import time
import traceback
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from iii._version import __version__
from iii.protocol import otlp
from iii.sdk.context import current_invocation, current_telemetry
from iii.sdk.terms import EngineTerms

if TYPE_CHECKING:
    from iii.sdk.options import InitOptions

log = logging.getLogger("iii.sdk.telemetry")

MAX_QUEUED: Final = 4096
"""Spans (and, separately, log records) waiting to be sent; more are dropped and counted."""
BATCH: Final = 512
"""Records in one message at most."""
BATCHES_PER_FLUSH: Final = 8
"""Messages sent in one turn of the loop; more wait for the next turn, so that calls are not held up."""
CONNECT_TIMEOUT_S: Final = 5.0
RETRY_MIN_S: Final = 1.0
RETRY_MAX_S: Final = 30.0
CLOSE_FLUSH_S: Final = 2.0
"""At shutdown, how long sending what is queued may take."""
FALLBACK_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
"""The largest message sent to an engine that announced no limit."""
SCOPE: Final = otlp.Scope("iii-py", __version__)
_FALSE: Final = frozenset(("false", "0", "no", "off"))


# --- settings ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TelemetrySettings:
    """What the worker records and how it is named (see the module docstring for where each comes from)."""

    enabled: bool = True
    logs_enabled: bool = True
    service_name: str = "iii-py"
    service_version: str = "unknown"
    service_namespace: str | None = None
    service_instance_id: str = ""
    flush_interval_s: float = 0.1

    @classmethod
    def of(cls, options: InitOptions) -> TelemetrySettings:
        """The settings of a worker: ``options.otel``'s fields (``enabled``, ``logs_enabled``, ``service_name``,
        ``service_version``, ``service_namespace``, ``service_instance_id``, ``spans_flush_interval_ms``), else
        the environment (``OTEL_ENABLED``, ``OTEL_SERVICE_NAME``, ``SERVICE_VERSION``, ``SERVICE_NAMESPACE``,
        ``SERVICE_INSTANCE_ID``, ``OTEL_SPANS_FLUSH_INTERVAL_MS``), else the defaults."""
        config = options.otel

        def setting(name: str) -> Any:
            if isinstance(config, Mapping):
                return config.get(name)
            return getattr(config, name, None)

        enabled = setting("enabled")
        if enabled is None:
            enabled = os.environ.get("OTEL_ENABLED", "").strip().lower() not in _FALSE
        logs_enabled = setting("logs_enabled")
        interval_ms = setting("spans_flush_interval_ms")
        if interval_ms is None:
            try:
                interval_ms = int(os.environ.get("OTEL_SPANS_FLUSH_INTERVAL_MS", "100"))
            except ValueError:
                interval_ms = 100
        return cls(
            enabled=bool(enabled),
            logs_enabled=True if logs_enabled is None else bool(logs_enabled),
            service_name=setting("service_name") or os.environ.get("OTEL_SERVICE_NAME") or options.resolved_name(),
            service_version=setting("service_version") or os.environ.get("SERVICE_VERSION") or "unknown",
            service_namespace=setting("service_namespace") or os.environ.get("SERVICE_NAMESPACE") or None,
            service_instance_id=setting("service_instance_id")
            or os.environ.get("SERVICE_INSTANCE_ID")
            or str(uuid.uuid4()),
            flush_interval_s=max(0, int(interval_ms)) / 1000,
        )

    def resource(self) -> otlp.Attributes:
        entries: dict[str, Any] = {
            "service.name": self.service_name,
            "service.version": self.service_version,
            "service.instance.id": self.service_instance_id,
            "telemetry.sdk.name": "iii-py",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.version": __version__,
        }
        if self.service_namespace:
            entries["service.namespace"] = self.service_namespace
        return otlp.attributes(entries)


# --- trace context -----------------------------------------------------------------------------------


_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?", re.IGNORECASE)
_NO_TRACE: Final = "0" * 32
_NO_SPAN: Final = "0" * 16


def parse_traceparent(traceparent: str | None) -> tuple[str, str, bool] | None:
    """``(trace id, parent span id, sampled)`` of a W3C ``traceparent``; None if absent or malformed (version
    ``ff``, an all-zero id)."""
    if not traceparent:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    trace_id, span_id = trace_id.lower(), span_id.lower()
    if version.lower() == "ff" or trace_id == _NO_TRACE or span_id == _NO_SPAN:
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def new_trace_id() -> str:
    return f"{random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


def baggage_entries(baggage: str) -> list[tuple[str, str]]:
    """The ``key=value`` entries of a W3C ``baggage`` header (properties after ``;`` left out; malformed
    entries skipped)."""
    entries = []
    for member in baggage.split(","):
        key, separator, value = member.split(";", 1)[0].partition("=")
        key = key.strip()
        if separator and key:
            entries.append((unquote(key), unquote(value.strip())))
    return entries


class ExecutionSpan:
    """The span of one handler run, from its start until the answer is sent."""

    __slots__ = ("baggage", "name", "parent_span_id", "span_id", "start_ns", "trace_id")

    def __init__(self, name: str, trace_id: str, parent_span_id: str | None, baggage: str | None) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = new_span_id()
        self.parent_span_id = parent_span_id
        self.baggage = baggage
        self.start_ns = time.time_ns()


# --- the exporter ------------------------------------------------------------------------------------


class _OtelSocket(WSListener):
    """The picows listener of the ``/otel`` socket: telemetry only goes out; a close is answered."""

    def __init__(self, on_writable: Callable[[], None]) -> None:
        self.transport: WSTransport | None = None
        self.open = False
        self.writable = True
        self._on_writable = on_writable

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.open = True

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self._on_writable()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.open = False


def otel_url(address: str) -> str:
    """The engine's telemetry address for a worker address: its path with ``/otel`` appended."""
    parts = urlsplit(address)
    path = parts.path.rstrip("/")
    if not path.endswith("/otel"):
        path = f"{path}/otel"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


class Exporter:
    """One worker's telemetry: spans and log records queued, then sent to the engine's ``/otel`` in batches.

    :meth:`start_span` and :meth:`end_span` run on the SDK loop; :meth:`add_log` on any thread. Nothing here
    raises into a call or a handler, nor waits for the network.
    """

    def __init__(
        self,
        settings: TelemetrySettings,
        loop: asyncio.AbstractEventLoop,
        address: Callable[[], str],
        headers: dict[str, str],
        terms: EngineTerms,
    ) -> None:
        self.settings = settings
        self._loop = loop
        self._address = address
        self._headers = headers
        self._terms = terms
        self._resource = settings.resource()
        self._spans: deque[tuple[ExecutionSpan, int, Any]] = deque()
        self._logs: deque[otlp.LogRecord] = deque()
        self.dropped = 0
        """Records dropped: the queue was full (the engine slow or unreachable), one was too big to send, or they
        were still queued at shutdown (approximate when several threads log at once)."""
        self.sent = 0
        """Records handed to the socket."""
        self._scheduled = False
        self._socket: _OtelSocket | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._failures = 0
        self._closed = False
        self._loop_thread: int | None = None
        loop.call_soon_threadsafe(self._note_loop_thread)
        if settings.logs_enabled:
            _routing.add(self)

    def _note_loop_thread(self) -> None:
        self._loop_thread = threading.get_ident()

    # --- recording -----------------------------------------------------------------------------------

    def start_span(self, function_id: str, traceparent: str | None, baggage: str | None) -> ExecutionSpan | None:
        """The span of a handler run about to start; None when the caller's trace is not sampled (its
        ``traceparent`` is then passed on unchanged)."""
        parent = parse_traceparent(traceparent)
        if parent is None:
            return ExecutionSpan(f"execute {function_id}", new_trace_id(), None, baggage)
        trace_id, parent_span_id, sampled = parent
        if not sampled:
            return None
        return ExecutionSpan(f"execute {function_id}", trace_id, parent_span_id, baggage)

    def end_span(self, span: ExecutionSpan, error: Any) -> None:
        """The handler's run ended (``error``: the error answered, None for a result). On the SDK loop."""
        if len(self._spans) >= MAX_QUEUED or self._closed:
            self.dropped += 1
            return
        self._spans.append((span, time.time_ns(), error))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_later(self.settings.flush_interval_s, self._flush)

    def add_log(self, record: otlp.LogRecord) -> None:
        """Queue a log record (any thread)."""
        if len(self._logs) >= MAX_QUEUED or self._closed:
            self.dropped += 1
            return
        self._logs.append(record)
        if not self._scheduled:
            self._scheduled = True
            if threading.get_ident() == self._loop_thread:
                self._loop.call_later(self.settings.flush_interval_s, self._flush)
            else:
                try:
                    self._loop.call_soon_threadsafe(self._loop.call_later, self.settings.flush_interval_s, self._flush)
                except RuntimeError:  # the loop has closed: the worker is gone
                    self._scheduled = False

    def log(
        self,
        severity_number: int,
        severity_text: str,
        body: str,
        attributes: otlp.Attributes,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> None:
        """Queue a log line made now, with the trace and span ids given, else those of the handler it is made in
        (if any)."""
        now = str(time.time_ns())
        invocation = current_invocation()
        if invocation is not None:
            trace_id = trace_id or invocation.trace_id
            span_id = span_id or invocation.span_id
        self.add_log(
            otlp.LogRecord(
                time_unix_nano=now,
                observed_time_unix_nano=now,
                severity_number=severity_number,
                severity_text=severity_text,
                body={"stringValue": body},
                attributes=attributes,
                trace_id=trace_id or "",
                span_id=span_id or "",
            )
        )

    # --- sending (on the SDK loop) -------------------------------------------------------------------

    def _flush(self) -> None:
        self._scheduled = False
        if not self._spans and not self._logs:
            return
        socket = self._socket
        if socket is None or not socket.open:
            self._socket = None
            self._connect_soon()
            return
        if not socket.writable:
            return  # resume_writing flushes again
        for _ in range(BATCHES_PER_FLUSH):
            if not self._send_batch(socket):
                return
        if (self._spans or self._logs) and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _send_batch(self, socket: _OtelSocket) -> bool:
        """Send one message of spans and one of logs; False when nothing is left."""
        spans = [self._spans.popleft() for _ in range(min(BATCH, len(self._spans)))]
        logs = [self._logs.popleft() for _ in range(min(BATCH, len(self._logs)))]
        if spans:
            self._send(socket, otlp.spans_message, [_encoded_span(*entry) for entry in spans])
        if logs:
            self._send(socket, otlp.logs_message, logs)
        return bool(self._spans or self._logs)

    def _send(
        self, socket: _OtelSocket, encode: Callable[[otlp.Attributes, otlp.Scope, list[Any]], bytes], items: list[Any]
    ) -> None:
        """Encode and send ``items`` in one message, or in halves when that is over the engine's limit."""
        message = encode(self._resource, SCOPE, items)
        limit = self._terms.max_message_bytes or FALLBACK_MAX_MESSAGE_BYTES
        if len(message) > limit:
            if len(items) == 1:
                self.dropped += 1
                log.debug("a telemetry record of %d bytes is over the engine's limit: dropped", len(message))
                return
            half = len(items) // 2
            self._send(socket, encode, items[:half])
            self._send(socket, encode, items[half:])
            return
        if socket.transport is None or not socket.open:
            self.dropped += len(items)
            return
        socket.transport.send(WSMsgType.BINARY, message)
        self.sent += len(items)

    def _connect_soon(self) -> None:
        if self._connecting is None and not self._closed:
            self._connecting = self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            socket = await self._open_socket()
        except Exception as exc:  # unreachable, refused, no /otel: retried later, quietly
            self._failures += 1
            delay = min(RETRY_MIN_S * 2 ** (self._failures - 1), RETRY_MAX_S)
            log.debug("telemetry socket to %s failed (%s); retrying in %.0f s", self._address(), exc, delay)
            self._loop.call_later(delay, self._retry)
            return
        finally:
            self._connecting = None
        self._failures = 0
        self._socket = socket
        self._flush()

    def _retry(self) -> None:
        if self._spans or self._logs:
            self._connect_soon()

    async def _open_socket(self) -> _OtelSocket:
        listener = _OtelSocket(self._on_writable)
        await asyncio.wait_for(
            ws_connect(
                lambda: listener,
                otel_url(self._address()),
                extra_headers=self._headers or None,
                enable_auto_ping=False,
            ),
            CONNECT_TIMEOUT_S,
        )
        return listener

    def _on_writable(self) -> None:
        if not self._scheduled and (self._spans or self._logs):
            self._scheduled = True
            self._loop.call_soon(self._flush)

    async def close(self) -> None:
        """Send what is queued (up to :data:`CLOSE_FLUSH_S`), then close the socket. On the SDK loop."""
        _routing.discard(self)
        self._closed = True
        try:
            await asyncio.wait_for(self._drain(), CLOSE_FLUSH_S)
        except Exception as exc:
            log.debug("telemetry not sent at shutdown: %s", exc)
        self.dropped += len(self._spans) + len(self._logs)
        self._spans.clear()
        self._logs.clear()
        socket = self._socket
        if socket is not None and socket.transport is not None and socket.open:
            socket.transport.send_close(WSCloseCode.OK)
            socket.transport.disconnect()

    def forked(self) -> None:
        """In a forked child: this exporter's loop did not come along; it takes nothing more."""
        self._closed = True
        _routing.discard(self)

    async def _drain(self) -> None:
        if not self._spans and not self._logs:
            return
        if self._failures:  # the engine did not take the socket lately: shutdown does not wait for it again
            return
        if self._socket is None or not self._socket.open:
            if self._connecting is not None:
                self._connecting.cancel()
                self._connecting = None
            self._socket = await self._open_socket()
        while self._send_batch(self._socket):
            pass


def _encoded_span(span: ExecutionSpan, end_ns: int, error: Any) -> str:
    """The span as OTLP/JSON: status ok, or error with the error's message and an ``exception`` event."""
    events = None
    if error is None:
        status, message = otlp.STATUS_OK, ""
    else:
        message = str(error.get("message", "")) if isinstance(error, Mapping) else str(error)
        status = otlp.STATUS_ERROR
        details: dict[str, Any] = {"exception.message": message}
        if isinstance(error, Mapping):
            details["exception.type"] = str(error.get("code", ""))
            if error.get("stacktrace"):
                details["exception.stacktrace"] = str(error["stacktrace"])
        events = [otlp.Event("exception", str(end_ns), otlp.attributes(details))]
    return otlp.span_json(
        span.trace_id,
        span.span_id,
        span.parent_span_id,
        span.name,
        span.start_ns,
        end_ns,
        status_code=status,
        status_message=message,
        attributes=otlp.attributes(baggage_entries(span.baggage)) if span.baggage else None,
        events=events,
    )


# --- log records -------------------------------------------------------------------------------------


class _Routing:
    """Which exporter a log record goes to: the one of the worker whose handler makes it, else the latest one
    started (a process usually has one worker). Installs :class:`EngineLogHandler` on the root logger while
    there is an exporter that sends logs."""

    def __init__(self) -> None:
        self._exporters: list[weakref.ref[Exporter]] = []
        self._handler: EngineLogHandler | None = None
        self._lock = threading.Lock()

    def add(self, exporter: Exporter) -> None:
        with self._lock:
            self._exporters.append(weakref.ref(exporter))
            if self._handler is None:
                self._handler = EngineLogHandler()
                logging.getLogger().addHandler(self._handler)

    def discard(self, exporter: Exporter) -> None:
        with self._lock:
            self._exporters = [ref for ref in self._exporters if ref() not in (None, exporter)]
            if not self._exporters and self._handler is not None:
                logging.getLogger().removeHandler(self._handler)
                self._handler = None

    def exporter(self) -> Exporter | None:
        serving = current_telemetry()
        if isinstance(serving, Exporter):
            return serving if serving.settings.logs_enabled else None
        for ref in reversed(self._exporters):
            found = ref()
            if found is not None:
                return found
        return None


_routing: Final = _Routing()


def severity(levelno: int) -> tuple[int, str]:
    """OpenTelemetry's severity number and text for a Python logging level."""
    if levelno >= logging.CRITICAL:
        return 21, "FATAL"
    if levelno >= logging.ERROR:
        return 17, "ERROR"
    if levelno >= logging.WARNING:
        return 13, "WARN"
    if levelno >= logging.INFO:
        return 9, "INFO"
    if levelno >= logging.DEBUG:
        return 5, "DEBUG"
    return 1, "TRACE"


_OWN_LOGGERS: Final = frozenset(("iii", "picows"))
"""Loggers whose records are not sent: the SDK's and its transport's (an engine and a worker in one process must
not feed each other's logs, nor the telemetry socket log its own sending)."""


class EngineLogHandler(logging.Handler):
    """Sends the program's ``logging`` records to the engine (those its logging configuration lets through),
    with the trace and span ids of the handler they are made in. The records of :data:`_OWN_LOGGERS` are left
    out."""

    def handle(self, record: logging.LogRecord) -> bool:  # no lock: the queue is thread-safe
        name = record.name
        if name.partition(".")[0] in _OWN_LOGGERS:
            return False
        exporter = _routing.exporter()
        if exporter is None:
            return False
        try:
            body = record.getMessage()
        except Exception:
            body = str(record.msg)
        details: dict[str, Any] = {
            "logger.name": name,
            "code.filepath": record.pathname,
            "code.function": record.funcName,
            "code.lineno": record.lineno,
        }
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            details["exception.type"] = type(error).__name__
            details["exception.message"] = str(error)
            details["exception.stacktrace"] = "".join(traceback.format_exception(error))
        number, text = severity(record.levelno)
        exporter.log(number, text, body, otlp.attributes(details))
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


_LEVELS: Final = {"debug": (5, "DEBUG"), "info": (9, "INFO"), "warn": (13, "WARN"), "error": (17, "ERROR")}
_fallback: Final = logging.getLogger("iii.logger")


class Logger:
    """Structured log lines sent to the engine, as the official SDKs' ``Logger``: ``info``, ``warn``, ``error``
    and ``debug``, each ``(message, data=None)``; ``data`` goes in the record's ``log.data`` attribute. Lines
    made in a handler carry its trace and span ids (or the ones given here). Without a worker that sends
    telemetry, the line goes to Python ``logging`` (logger ``iii.logger``) instead."""

    def __init__(
        self, trace_id: str | None = None, service_name: str | None = None, span_id: str | None = None
    ) -> None:
        self._trace_id = trace_id
        self._service_name = service_name or ""
        self._span_id = span_id

    def _emit(self, level: str, message: str, data: Any) -> None:
        exporter = _routing.exporter()
        if exporter is None:
            method = _fallback.warning if level == "warn" else getattr(_fallback, level)
            method("[%s] %s", self._service_name, message, extra={"data": data})
            return
        details: dict[str, Any] = {"service.name": self._service_name}
        if data is not None:
            details["log.data"] = data
        number, text = _LEVELS[level]
        exporter.log(number, text, str(message), otlp.attributes(details), self._trace_id, self._span_id)

    def info(self, message: str, data: Any = None) -> None:
        self._emit("info", message, data)

    def warn(self, message: str, data: Any = None) -> None:
        self._emit("warn", message, data)

    def error(self, message: str, data: Any = None) -> None:
        self._emit("error", message, data)

    def debug(self, message: str, data: Any = None) -> None:
        self._emit("debug", message, data)
