"""The observability module: what the workers' SDKs send to ``/otel``, kept and served, as the reference's
observability worker keeps and serves it (its in-memory exporter).

It receives the engine's telemetry (:meth:`~iii.modules.api.ModuleHost.receive_telemetry`), decodes each message
(:mod:`.otlp`) and keeps the records in three rings (:class:`.store.Ring`), each bounded by a count and by bytes
(an estimate of the records' memory, :func:`.store.record_size`; ``[observability]`` settings): past a bound the
oldest records go, counted in ``iii_observability_dropped_total{signal}``. A message that does not decode is
dropped whole and counted in ``iii_observability_messages_total{signal, outcome="malformed"}`` (one over
``max_message_bytes``, undecoded, as ``too_large``); the connection it came on goes on.

Functions, with the reference's names, inputs and answers (times in its units: filters in Unix milliseconds,
records in nanoseconds); each handler reads its input and runs a query of :mod:`.queries` over the rings:

* ``engine::log::info|warn|error|debug|trace`` ``{message, data?, trace_id?, span_id?, service_name?}``: a log
  record from the caller (severity 9, 13, 17, 5, 1); answers null. Without ``trace_id`` and ``span_id`` the
  record has those of the trace context the call came with (the caller's span), if any.
* ``engine::logs::list`` ``{trace_id?, span_id?, severity_min?, severity_text?, start_time?, end_time?, offset?,
  limit?}`` and ours, ``service_name?`` (the worker's service, a case-insensitive substring) and
  ``function_id?`` (the records logged in a run of that function: their span is a stored ``execute <id>`` or
  ``call <id>`` span, :func:`.queries.function_spans`) → ``{logs, total, query, timestamp}``, newest first.
  ``engine::logs::clear`` → ``{success}``.
* ``engine::traces::list`` (the reference's filters: ``trace_id``, ``trace_ids``, ``service_name``, ``name``,
  ``status``, ``min_duration_ms``, ``max_duration_ms``, ``start_time``, ``end_time``, ``attributes``,
  ``exclude_attributes``, ``include_internal``, ``search_all_spans``, ``sort_by``, ``sort_order``, ``offset``,
  ``limit``) → ``{spans, total, offset, limit, storage}``: root spans unless ``search_all_spans``.
  ``engine::traces::tree {trace_id}`` → ``{roots, storage}``, each span with its ``children``.
  ``engine::traces::clear`` → ``{success}``.
* ``engine::metrics::list`` ``{metric_name?, start_time?, end_time?}`` → ``{engine_metrics, sdk_metrics,
  timestamp, query}``: the metrics the SDKs sent, and the invocations and their latencies as the stored spans
  of function executions show them.
* ``engine::health::check`` → ``{status, components: {otel, metrics, logs, spans}, timestamp, version}``.

Trigger types ``log`` (config ``{level?}``: each record kept) and ``trace`` (config ``{service_name?, status?}``:
a coalesced tick of the traces with span activity), as the reference has them: :mod:`.triggers`.

The console's Logs and Trace views ask over ``/console/query`` (:meth:`console_query`, :mod:`.console`).

Every batch kept is also told to the :class:`RecordListener` s: with ``otlp_endpoint`` the forwarder to a
collector (:mod:`.export`), with ``persist`` the copy in the data directory (:mod:`.persistence`, read back into
the rings at start).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Protocol

import msgspec

from iii._version import __version__
from iii.modules.api import CallInfo, FunctionError, MetricSample, ModuleHost
from iii.protocol.errors import DESERIALIZATION_ERROR

from . import otlp, queries
from .console import console_view
from .export import OtlpExporter, parse_headers
from .persistence import PersistedRecords
from .settings import ObservabilitySettings
from .store import Ring, record_size
from .triggers import ObservabilityTriggers, traceparent_ids

log = logging.getLogger("iii.modules.observability")

LEVELS: Final = {
    "trace": ("TRACE", 1),
    "debug": ("DEBUG", 5),
    "info": ("INFO", 9),
    "warn": ("WARN", 13),
    "error": ("ERROR", 17),
}
"""``engine::log::<level>``: the severity text and number of its records (the reference's)."""
MALFORMED_LOG_INTERVAL_S: Final = 60.0
"""A dropped message (malformed, too large) is logged (a warning) at most this often; all are counted."""


class RecordListener(Protocol):
    """Told of every batch of records the module keeps, after they are in their ring (on the engine's loop: it
    must not block; what takes time it queues)."""

    def on_records(self, signal: str, records: list[dict[str, Any]], raw: bytes | None) -> None:
        """``signal`` is ``"spans"``, ``"logs"`` or ``"metrics"``; ``records`` as the rings hold them;
        ``raw`` the OTLP/JSON export request they were decoded from (its 4-byte tag removed), or None when the
        records were made here (``engine::log::*``, the engine's own spans)."""


class ObservabilityModule:
    """Keeps the workers' telemetry and serves it (see the module docstring)."""

    name = "observability"

    def __init__(self, settings: ObservabilitySettings | None = None) -> None:
        self.settings = settings = settings or ObservabilitySettings()
        self.logs: Ring[dict[str, Any]] = Ring(settings.logs_max_count, settings.logs_max_bytes)
        self.spans: Ring[dict[str, Any]] = Ring(settings.spans_max_count, settings.spans_max_bytes)
        self.metric_points: Ring[dict[str, Any]] = Ring(settings.metrics_max_count, settings.metrics_max_bytes)
        self._messages: dict[tuple[str, str], int] = {}
        """(signal, outcome) -> messages received."""
        self._last_malformed_log = -MALFORMED_LOG_INTERVAL_S
        self._running = False
        self._encoder = msgspec.json.Encoder()
        self._listeners: list[RecordListener] = []
        self.triggers: ObservabilityTriggers | None = None
        """The ``log`` and ``trace`` trigger types (:mod:`.triggers`), once started."""
        self._exporter: OtlpExporter | None = None
        """Forwards to the collector at ``otlp_endpoint``, when set (:mod:`.export`)."""
        self._persisted: PersistedRecords | None = None
        """Keeps the records in ``data_dir``, with ``persist`` (:mod:`.persistence`)."""

    def add_listener(self, listener: RecordListener) -> None:
        """Have ``listener`` told of every batch of records kept from now on."""
        self._listeners.append(listener)

    async def start(self, host: ModuleHost) -> None:
        settings = self.settings
        if settings.persist and settings.data_dir is not None:
            self._persisted = await PersistedRecords.open(settings.data_dir, self._bounds())
            for signal, records in (await self._persisted.load()).items():
                self.keep(signal, records, restored=True)
            self.add_listener(self._persisted)
        if settings.otlp_endpoint:
            self._exporter = OtlpExporter(
                settings.otlp_endpoint,
                parse_headers(settings.otlp_headers),
                max_records=settings.otlp_queue_max_records,
                max_bytes=settings.otlp_queue_max_bytes,
                timeout_s=settings.otlp_timeout_s,
            )
            await self._exporter.start()
            self.add_listener(self._exporter)
        host.receive_telemetry(self)
        self.triggers = ObservabilityTriggers(host)
        self.triggers.register(host)
        self.add_listener(self.triggers)
        for level, (text, number) in LEVELS.items():
            host.register_function(
                f"engine::log::{level}",
                self._logger(text, number),
                description=f"Record a {text}-level log (severity {number}) with optional trace/span ids and data",
                request_format=LOG_REQUEST_FORMAT,
            )
        functions: list[tuple[str, Callable[[Any, CallInfo], Any], str]] = [
            ("engine::logs::list", self._list_logs, "List stored logs, newest first, with filters"),
            ("engine::logs::clear", self._clear("logs"), "Drop every stored log"),
            ("engine::traces::list", self._list_traces, "List stored spans (root spans by default) with filters"),
            ("engine::traces::tree", self._trace_tree, "One trace's spans as a tree"),
            ("engine::traces::clear", self._clear("spans"), "Drop every stored span"),
            ("engine::metrics::list", self._list_metrics, "The metrics the SDKs sent, and invocation statistics"),
            ("engine::health::check", self._health, "The observability stores' health"),
        ]
        for function_id, handler, description in functions:
            host.register_function(function_id, handler, description=description)
        self._running = True

    async def stop(self) -> None:
        self._running = False
        if self.triggers is not None:
            await self.triggers.close()
        if self._exporter is not None:
            await self._exporter.stop()
        if self._persisted is not None:
            await self._persisted.close()

    # --- ingestion -----------------------------------------------------------------------------------

    def receive(self, message: bytes) -> None:
        """Decode and keep one telemetry message (a :class:`~iii.modules.api.TelemetrySink`)."""
        if not self._running:
            return
        signal = otlp.SIGNALS.get(message[:4], "unknown")
        if len(message) > self.settings.max_message_bytes:
            self._count(signal, "too_large")
            self._warn(f"dropped a telemetry message ({signal}) of {len(message)} bytes, over max_message_bytes")
            return
        try:
            signal, records = otlp.decode(message)
            self.keep(signal, records, message[4:])
        except otlp.MalformedTelemetry as exc:
            self._count(signal, "malformed")
            self._warn(f"dropped a malformed telemetry message ({signal}, {len(message)} bytes): {exc}")
            return
        self._count(signal, "stored")

    def _warn(self, what: str) -> None:
        """Log a dropped message, at most once a :data:`MALFORMED_LOG_INTERVAL_S` (all are counted)."""
        now = time.monotonic()
        if now - self._last_malformed_log >= MALFORMED_LOG_INTERVAL_S:
            self._last_malformed_log = now
            dropped = sum(n for (_, outcome), n in self._messages.items() if outcome != "stored")
            log.warning("%s; %d dropped so far (iii_observability_messages_total)", what, dropped)

    def keep(
        self, signal: str, records: list[dict[str, Any]], raw: bytes | None = None, *, restored: bool = False
    ) -> None:
        """Keep ``records`` of ``signal`` (``"spans"``, ``"logs"``, ``"metrics"``) in their ring and tell the
        listeners; ``raw`` as :meth:`RecordListener.on_records` has it. ``restored``: records read back from the
        data directory at start, only put in their ring (the listeners were told when they first came)."""
        ring = self._ring(signal)
        encode = self._encoder.encode
        for record in records:
            ring.add(record, record_size(encode(record)))
        if restored:
            return
        for listener in self._listeners:
            try:
                listener.on_records(signal, records, raw)
            except Exception:  # one listener's failure must not lose the records for the others
                log.exception("a telemetry listener failed on %d %s records", len(records), signal)

    def _count(self, signal: str, outcome: str) -> None:
        key = (signal, outcome)
        self._messages[key] = self._messages.get(key, 0) + 1

    # --- engine::log::* ------------------------------------------------------------------------------

    def _logger(self, severity_text: str, severity_number: int) -> Callable[[Any, CallInfo], None]:
        def log_record(data: Any, call: CallInfo) -> None:
            payload = queries.as_object(data)
            message = payload.get("message")
            if not isinstance(message, str):
                raise FunctionError(DESERIALIZATION_ERROR, "message must be a string")
            fields = {key: queries.optional_str(payload, key) for key in ("trace_id", "span_id", "service_name")}
            if fields["trace_id"] is None and fields["span_id"] is None:  # the trace the call came in, if any
                fields["trace_id"], fields["span_id"] = traceparent_ids(call.traceparent)
            extra = payload.get("data")
            now = time.time_ns()
            record: dict[str, Any] = {
                "timestamp_unix_nano": now,
                "observed_timestamp_unix_nano": now,
                "severity_number": severity_number,
                "severity_text": severity_text,
                "body": message,
                "attributes": dict(extra) if isinstance(extra, dict) else {},
                "trace_id": fields["trace_id"],
                "span_id": fields["span_id"],
                "resource": {"service.name": "iii"},
                "service_name": fields["service_name"] or "unknown",
                "instrumentation_scope_name": "iii",
                "instrumentation_scope_version": __version__,
            }
            if call.worker_id is not None:
                record["worker_id"] = call.worker_id
            self.keep("logs", [record])

        return log_record

    # --- queries -------------------------------------------------------------------------------------

    def _list_logs(self, data: Any, call: CallInfo) -> dict[str, Any]:
        query = queries.as_object(data)
        logs, total = queries.list_logs(self.logs, query, self.spans)
        asked = {key: query.get(key) for key in queries.LOGS_QUERY_KEYS}
        return {"logs": logs, "total": total, "query": asked, "timestamp": queries.now_ms()}

    def _clear(self, signal: str) -> Callable[[Any, CallInfo], dict[str, Any]]:
        def clear(data: Any, call: CallInfo) -> dict[str, Any]:
            self._ring(signal).clear()
            if self._persisted is not None:
                self._persisted.clear(signal)
            return {"success": True}

        return clear

    def _list_traces(self, data: Any, call: CallInfo) -> dict[str, Any]:
        spans, total, offset, limit = queries.list_traces(self.spans, queries.as_object(data))
        return {"spans": spans, "total": total, "offset": offset, "limit": limit, "storage": self._storage()}

    def _trace_tree(self, data: Any, call: CallInfo) -> dict[str, Any]:
        return {"roots": queries.trace_tree(self.spans, queries.as_object(data)), "storage": self._storage()}

    def _storage(self) -> dict[str, Any]:
        """The reference's ``storage`` status: no archive here; ``partial`` once spans were dropped."""
        return {
            "archive": "disabled",
            "completeness": "partial" if self.spans.dropped else "complete",
            "dropped_spans": self.spans.dropped,
        }

    def _list_metrics(self, data: Any, call: CallInfo) -> dict[str, Any]:
        query = queries.as_object(data)
        return {
            "engine_metrics": queries.invocation_metrics(self.spans),
            "sdk_metrics": queries.list_sdk_metrics(self.metric_points, query),
            "timestamp": queries.now_ms(),
            "query": {key: query.get(key) for key in queries.METRICS_QUERY_KEYS},
        }

    def _health(self, data: Any, call: CallInfo) -> dict[str, Any]:
        def component(**details: Any) -> dict[str, Any]:
            return {"status": "healthy", "details": details}

        return {
            "status": "healthy",
            "components": {
                "otel": component(enabled=True, exporter="both" if self._exporter is not None else "memory"),
                "metrics": component(stored_metrics=len(self.metric_points), dropped=self.metric_points.dropped),
                "logs": component(stored_logs=len(self.logs), dropped=self.logs.dropped),
                "spans": component(
                    stored_spans=len(self.spans), hot_bytes=self.spans.bytes, dropped=self.spans.dropped
                ),
            },
            "timestamp": queries.now_ms(),
            "version": __version__,
        }

    async def console_query(self, query: Any) -> Any:
        """The console's Logs and Trace views (:class:`~iii.modules.api.ConsoleQueries`; :mod:`.console`)."""
        return console_view(self.logs, self.spans, query)

    # --- module --------------------------------------------------------------------------------------

    def metrics(self) -> Iterator[MetricSample]:
        for signal, ring in self._rings():
            labels = {"signal": signal}
            yield MetricSample("observability_records", len(ring), labels, "Telemetry records kept")
            yield MetricSample(
                "observability_bytes", ring.bytes, labels, "Memory of the telemetry records kept (estimated)"
            )
            yield MetricSample(
                "observability_dropped_total", ring.dropped, labels, "Oldest records dropped past a bound", "counter"
            )
        for (signal, outcome), count in sorted(self._messages.items()):
            yield MetricSample(
                "observability_messages_total",
                count,
                {"signal": signal, "outcome": outcome},
                "Telemetry messages received (stored, or dropped: malformed, too_large)",
                "counter",
            )
        if self.triggers is not None:
            yield from self.triggers.metrics()
        if self._exporter is not None:
            yield from self._exporter.metrics()
        if self._persisted is not None:
            yield from self._persisted.metrics()

    def snapshot(self) -> Mapping[str, Any]:
        return {
            "backend": "memory+sqlite" if self._persisted is not None else "memory",
            **{
                signal: {"records": len(ring), "bytes": ring.bytes, "dropped": ring.dropped}
                for signal, ring in self._rings()
            },
            "malformed_messages": sum(
                count for (_, outcome), count in self._messages.items() if outcome == "malformed"
            ),
        }

    def _bounds(self) -> dict[str, tuple[int, int]]:
        """Each signal's ring bounds (count, bytes)."""
        return {signal: (ring.max_count, ring.max_bytes) for signal, ring in self._rings()}

    def _ring(self, signal: str) -> Ring[dict[str, Any]]:
        return self.spans if signal == "spans" else self.logs if signal == "logs" else self.metric_points

    def _rings(self) -> Iterator[tuple[str, Ring[dict[str, Any]]]]:
        yield "logs", self.logs
        yield "spans", self.spans
        yield "metrics", self.metric_points


LOG_REQUEST_FORMAT: Final = {
    "type": "object",
    "properties": {
        "message": {"type": "string"},
        "data": {"type": "object"},
        "trace_id": {"type": "string"},
        "span_id": {"type": "string"},
        "service_name": {"type": "string"},
    },
    "required": ["message"],
}
