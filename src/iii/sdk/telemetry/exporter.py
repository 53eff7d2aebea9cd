"""One worker's telemetry queues: spans and log records kept in memory (bounded), then sent to the engine's
``/otel`` in batches, on the SDK loop, ``flush_interval_s`` after the first record of a batch; at shutdown what
is queued is sent (briefly) before the socket closes."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from picows import WSMsgType

from iii.protocol import otlp
from iii.sdk.context import current_invocation
from iii.sdk.telemetry.connection import Connection, OtelSocket
from iii.sdk.telemetry.logs import routing
from iii.sdk.telemetry.settings import SCOPE, TelemetrySettings
from iii.sdk.telemetry.spans import ExecutionSpan, encoded_span, start_span
from iii.sdk.terms import EngineTerms

log = logging.getLogger("iii.sdk.telemetry")

MAX_QUEUED: Final = 4096
"""Spans (and, separately, log records) waiting to be sent; more are dropped and counted."""
BATCH: Final = 512
"""Records in one message at most."""
BATCHES_PER_FLUSH: Final = 8
"""Messages sent in one turn of the loop; more wait for the next turn, so that calls are not held up."""
CLOSE_FLUSH_S: Final = 2.0
"""At shutdown, how long sending what is queued may take."""
FALLBACK_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
"""The largest message sent to an engine that announced no limit."""


class Exporter:
    """One worker's telemetry: spans and log records queued, then sent to the engine's ``/otel`` in batches.

    :meth:`start_span` and :meth:`end_span` run on the SDK loop; :meth:`add_log` on any thread. Nothing here
    raises into a call or a handler, nor waits for the network. While it sends logs it is one of the exporters
    log records are routed to (:data:`~iii.sdk.telemetry.logs.routing`).
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
        self._connection = Connection(loop, address, headers, self._flush, self._on_writable, self._pending)
        self._closed = False
        self._loop_thread: int | None = None
        loop.call_soon_threadsafe(self._note_loop_thread)
        if settings.logs_enabled:
            routing.add(self)

    def _note_loop_thread(self) -> None:
        self._loop_thread = threading.get_ident()

    # --- recording -----------------------------------------------------------------------------------

    def start_span(self, function_id: str, traceparent: str | None, baggage: str | None) -> ExecutionSpan | None:
        """The span of a handler run about to start (:func:`~iii.sdk.telemetry.spans.start_span`); None when the
        caller's trace is not sampled (its ``traceparent`` is then passed on unchanged)."""
        return start_span(function_id, traceparent, baggage)

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
        (if any). Any thread."""
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

    def _pending(self) -> bool:
        return bool(self._spans or self._logs)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._spans and not self._logs:
            return
        socket = self._connection.socket()
        if socket is None:
            return  # the connection flushes again once connected
        if not socket.writable:
            return  # _on_writable flushes again
        for _ in range(BATCHES_PER_FLUSH):
            if not self._send_batch(socket):
                return
        if (self._spans or self._logs) and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _on_writable(self) -> None:
        if not self._scheduled and (self._spans or self._logs):
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _send_batch(self, socket: OtelSocket) -> bool:
        """Send one message of spans and one of logs; False when nothing is left."""
        spans = [self._spans.popleft() for _ in range(min(BATCH, len(self._spans)))]
        logs = [self._logs.popleft() for _ in range(min(BATCH, len(self._logs)))]
        if spans:
            self._send(socket, otlp.spans_message, [encoded_span(*entry) for entry in spans])
        if logs:
            self._send(socket, otlp.logs_message, logs)
        return bool(self._spans or self._logs)

    def _send(
        self, socket: OtelSocket, encode: Callable[[otlp.Attributes, otlp.Scope, list[Any]], bytes], items: list[Any]
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

    # --- the end -------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Send what is queued (up to :data:`CLOSE_FLUSH_S`), then close the socket. On the SDK loop."""
        routing.discard(self)
        self._closed = True
        self._connection.stop()
        try:
            await asyncio.wait_for(self._drain(), CLOSE_FLUSH_S)
        except Exception as exc:
            log.debug("telemetry not sent at shutdown: %s", exc)
        self.dropped += len(self._spans) + len(self._logs)
        self._spans.clear()
        self._logs.clear()
        self._connection.close()

    def forked(self) -> None:
        """In a forked child: this exporter's loop did not come along; it takes nothing more."""
        self._closed = True
        self._connection.stop()
        routing.discard(self)

    async def _drain(self) -> None:
        if not self._spans and not self._logs:
            return
        if self._connection.failures:  # the engine did not take the socket lately: shutdown does not wait again
            return
        socket = await self._connection.open_now()
        while self._send_batch(socket):
            pass
