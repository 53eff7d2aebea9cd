"""The observability module: what the workers' SDKs send to ``/otel``, kept and served, as the reference's
observability worker keeps and serves it (its in-memory exporter).

It receives the engine's telemetry (:meth:`~iii.modules.api.ModuleHost.receive_telemetry`), decodes each message
(:mod:`.otlp`) and keeps the records in three rings (:class:`.store.Ring`), each bounded by a count and by bytes
(``[observability]`` settings): past a bound the oldest records go, counted in
``iii_observability_dropped_total{signal}``. A message that does not decode is dropped whole and counted in
``iii_observability_messages_total{signal, outcome="malformed"}`` (one over ``max_message_bytes``, undecoded, as
``too_large``); the connection it came on goes on.

Functions, with the reference's names, inputs and answers (times in its units: filters in Unix milliseconds,
records in nanoseconds):

* ``engine::log::info|warn|error|debug|trace`` ``{message, data?, trace_id?, span_id?, service_name?}``: a log
  record from the caller (severity 9, 13, 17, 5, 1); answers null.
* ``engine::logs::list`` ``{trace_id?, span_id?, severity_min?, severity_text?, start_time?, end_time?, offset?,
  limit?}`` and ours, ``service_name?`` (the worker's service, a case-insensitive substring) →
  ``{logs, total, query, timestamp}``, newest first. ``engine::logs::clear`` → ``{success}``.
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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from iii._version import __version__
from iii.modules.api import CallInfo, FunctionError, MetricSample, ModuleHost
from iii.protocol.errors import DESERIALIZATION_ERROR

from . import otlp
from .store import Ring

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
_NS_PER_MS: Final = 1_000_000
_MAX_LIMIT: Final = 10_000
"""At most this many records in one answer."""


@dataclass(frozen=True, slots=True)
class ObservabilitySettings:
    """The ``[observability]`` table: how much each store keeps (the oldest go past either bound). A record's
    bytes are the size of its JSON; Python's objects for it take a few times that."""

    logs_max_count: int = 10_000
    logs_max_bytes: int = 8 * 1024 * 1024
    spans_max_count: int = 10_000
    spans_max_bytes: int = 16 * 1024 * 1024
    metrics_max_count: int = 10_000
    metrics_max_bytes: int = 8 * 1024 * 1024
    max_message_bytes: int = 16 * 1024 * 1024
    """A larger telemetry message is dropped undecoded (counted as ``too_large``): decoding runs on the engine's
    loop, and the SDKs' batches are far smaller."""

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1:
            raise ValueError("observability needs max_message_bytes >= 1")
        for name in ("logs", "spans", "metrics"):
            if getattr(self, f"{name}_max_count") < 1 or getattr(self, f"{name}_max_bytes") < 1:
                raise ValueError(f"observability needs {name}_max_count >= 1 and {name}_max_bytes >= 1")


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

    async def start(self, host: ModuleHost) -> None:
        host.receive_telemetry(self)
        for level, (text, number) in LEVELS.items():
            host.register_function(
                f"engine::log::{level}",
                self._logger(text, number),
                description=f"Record a {text}-level log (severity {number}) with optional trace/span ids and data",
                request_format=LOG_REQUEST_FORMAT,
            )
        functions: list[tuple[str, Callable[[Any, CallInfo], Any], str]] = [
            ("engine::logs::list", self._list_logs, "List stored logs, newest first, with filters"),
            ("engine::logs::clear", self._clear(self.logs), "Drop every stored log"),
            ("engine::traces::list", self._list_traces, "List stored spans (root spans by default) with filters"),
            ("engine::traces::tree", self._trace_tree, "One trace's spans as a tree"),
            ("engine::traces::clear", self._clear(self.spans), "Drop every stored span"),
            ("engine::metrics::list", self._list_metrics, "The metrics the SDKs sent, and invocation statistics"),
            ("engine::health::check", self._health, "The observability stores' health"),
        ]
        for function_id, handler, description in functions:
            host.register_function(function_id, handler, description=description)
        self._running = True

    async def stop(self) -> None:
        self._running = False

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
            self._keep(self._ring(signal), records)
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

    def _keep(self, ring: Ring[dict[str, Any]], records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            ring.add(record, len(self._encoder.encode(record)))

    def _count(self, signal: str, outcome: str) -> None:
        key = (signal, outcome)
        self._messages[key] = self._messages.get(key, 0) + 1

    # --- engine::log::* ------------------------------------------------------------------------------

    def _logger(self, severity_text: str, severity_number: int) -> Callable[[Any, CallInfo], None]:
        def log_record(data: Any, call: CallInfo) -> None:
            payload = _object(data)
            message = payload.get("message")
            if not isinstance(message, str):
                raise FunctionError(DESERIALIZATION_ERROR, "message must be a string")
            fields = {key: _optional_str(payload, key) for key in ("trace_id", "span_id", "service_name")}
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
            self._keep(self.logs, (record,))

        return log_record

    # --- logs ----------------------------------------------------------------------------------------

    def _list_logs(self, data: Any, call: CallInfo) -> dict[str, Any]:
        query = _object(data)
        trace_id = _optional_str(query, "trace_id")
        span_id = _optional_str(query, "span_id")
        severity_min = _optional_int(query, "severity_min")
        severity_text = _optional_str(query, "severity_text")
        service = (_optional_str(query, "service_name") or "").lower()
        start_ns, end_ns = _window(query)
        offset, limit = _optional_int(query, "offset") or 0, _optional_int(query, "limit")

        def wanted(record: dict[str, Any]) -> bool:
            stamp = record["timestamp_unix_nano"]
            return (
                (trace_id is None or record["trace_id"] == trace_id)
                and (span_id is None or record["span_id"] == span_id)
                and (severity_min is None or record["severity_number"] >= severity_min)
                and (severity_text is None or record["severity_text"].lower() == severity_text.lower())
                and (start_ns is None or stamp >= start_ns)
                and (end_ns is None or stamp <= end_ns)
                and (not service or service in record["service_name"].lower())
            )

        found = sorted(
            (record for record in self.logs if wanted(record)), key=lambda r: r["timestamp_unix_nano"], reverse=True
        )
        asked = {key: query.get(key) for key in LOGS_QUERY_KEYS}
        return {
            "logs": _page(found, offset, limit),
            "total": len(found),
            "query": asked,
            "timestamp": time.time_ns() // _NS_PER_MS,
        }

    @staticmethod
    def _clear(ring: Ring[dict[str, Any]]) -> Callable[[Any, CallInfo], dict[str, Any]]:
        def clear(data: Any, call: CallInfo) -> dict[str, Any]:
            ring.clear()
            return {"success": True}

        return clear

    # --- traces --------------------------------------------------------------------------------------

    def _list_traces(self, data: Any, call: CallInfo) -> dict[str, Any]:
        query = _object(data)
        offset, limit = _optional_int(query, "offset") or 0, _optional_int(query, "limit") or 100
        trace_id = _optional_str(query, "trace_id")
        trace_ids = query.get("trace_ids")
        if trace_ids is not None and not (
            isinstance(trace_ids, list) and all(isinstance(item, str) for item in trace_ids)
        ):
            raise FunctionError(DESERIALIZATION_ERROR, "trace_ids must be a list of strings")
        wanted_ids = {trace_id} if trace_id is not None else set(trace_ids) if trace_ids is not None else None
        service = (_optional_str(query, "service_name") or "").lower()
        name = (_optional_str(query, "name") or "").lower()
        status = (_optional_str(query, "status") or "").lower()
        min_ms, max_ms = _optional_float(query, "min_duration_ms"), _optional_float(query, "max_duration_ms")
        start_ns, end_ns = _window(query)
        required = _pairs(query, "attributes")
        excluded = _pairs(query, "exclude_attributes")
        include_internal = query.get("include_internal") is True
        search_all = query.get("search_all_spans") is True
        spans = list(self.spans)
        present = {span["span_id"] for span in spans}

        def wanted(span: dict[str, Any]) -> bool:
            attributes = {(pair[0], pair[1]) for pair in span["attributes"]}
            duration_ms = _duration_ms(span)
            return (
                (search_all or span["parent_span_id"] is None or span["parent_span_id"] not in present)
                and (wanted_ids is None or span["trace_id"] in wanted_ids)
                and (include_internal or not _internal(span))
                and not (attributes & excluded)
                and required <= attributes
                and service in span["service_name"].lower()
                and name in span["name"].lower()
                and status in span["status"].lower()
                and (min_ms is None or duration_ms >= min_ms)
                and (max_ms is None or duration_ms <= max_ms)
                and (start_ns is None or span["end_time_unix_nano"] >= start_ns)
                and (end_ns is None or span["start_time_unix_nano"] <= end_ns)
            )

        found = [span for span in spans if wanted(span)]
        sort_by = query.get("sort_by")
        key: Callable[[dict[str, Any]], Any] = {
            "duration": _duration_ms,
            "duration_ms": _duration_ms,
            "service_name": lambda span: span["service_name"],
            "name": lambda span: span["name"],
        }.get(sort_by if isinstance(sort_by, str) else "", lambda span: span["start_time_unix_nano"])
        sort_order = query.get("sort_order")
        found.sort(key=key, reverse=isinstance(sort_order, str) and sort_order.lower() == "desc")
        return {
            "spans": _page(found, offset, limit),
            "total": len(found),
            "offset": offset,
            "limit": limit,
            "storage": self._storage(),
        }

    def _trace_tree(self, data: Any, call: CallInfo) -> dict[str, Any]:
        trace_id = _optional_str(_object(data), "trace_id")
        if trace_id is None:
            raise FunctionError(DESERIALIZATION_ERROR, "trace_id (a string) is required")
        spans = sorted(
            (span for span in self.spans if span["trace_id"] == trace_id), key=lambda s: s["start_time_unix_nano"]
        )
        nodes = {span["span_id"]: {**span, "children": []} for span in spans}
        roots: list[dict[str, Any]] = []
        for node in nodes.values():
            parent = nodes.get(node["parent_span_id"]) if node["parent_span_id"] is not None else None
            (parent["children"] if parent is not None and parent is not node else roots).append(node)
        return {"roots": roots, "storage": self._storage()}

    def _storage(self) -> dict[str, Any]:
        """The reference's ``storage`` status: no archive here; ``partial`` once spans were dropped."""
        return {
            "archive": "disabled",
            "completeness": "partial" if self.spans.dropped else "complete",
            "dropped_spans": self.spans.dropped,
        }

    # --- metrics and health --------------------------------------------------------------------------

    def _list_metrics(self, data: Any, call: CallInfo) -> dict[str, Any]:
        query = _object(data)
        metric_name = _optional_str(query, "metric_name")
        start_ns, end_ns = _window(query)
        sdk_metrics = [
            metric
            for metric in self.metric_points
            if (metric_name is None or metric["name"] == metric_name)
            and (start_ns is None or metric["timestamp_unix_nano"] >= start_ns)
            and (end_ns is None or metric["timestamp_unix_nano"] <= end_ns)
        ]
        return {
            "engine_metrics": self._invocation_metrics(),
            "sdk_metrics": sdk_metrics,
            "timestamp": time.time_ns() // _NS_PER_MS,
            "query": {key: query.get(key) for key in ("start_time", "end_time", "aggregate_interval", "metric_name")},
        }

    def _invocation_metrics(self) -> dict[str, Any]:
        """Invocations and their latencies, from the stored spans of function executions (``execute <id>``, what
        the SDKs record around a handler)."""
        by_function: dict[str, int] = {}
        durations: list[float] = []
        errors = 0
        for span in self.spans:
            function_id = _executed_function(span)
            if function_id is None:
                continue
            by_function[function_id] = by_function.get(function_id, 0) + 1
            durations.append(_duration_ms(span))
            errors += span["status"] == "error"
        durations.sort()
        return {
            "invocations": {
                "total": len(durations),
                "success": len(durations) - errors,
                "error": errors,
                "deferred": 0,
                "by_function": by_function,
            },
            "performance": {
                "avg_duration_ms": sum(durations) / len(durations) if durations else 0.0,
                "p50_duration_ms": _percentile(durations, 0.50),
                "p95_duration_ms": _percentile(durations, 0.95),
                "p99_duration_ms": _percentile(durations, 0.99),
                "min_duration_ms": durations[0] if durations else 0.0,
                "max_duration_ms": durations[-1] if durations else 0.0,
            },
        }

    def _health(self, data: Any, call: CallInfo) -> dict[str, Any]:
        def component(**details: Any) -> dict[str, Any]:
            return {"status": "healthy", "details": details}

        return {
            "status": "healthy",
            "components": {
                "otel": component(enabled=True, exporter="memory"),
                "metrics": component(stored_metrics=len(self.metric_points), dropped=self.metric_points.dropped),
                "logs": component(stored_logs=len(self.logs), dropped=self.logs.dropped),
                "spans": component(
                    stored_spans=len(self.spans), hot_bytes=self.spans.bytes, dropped=self.spans.dropped
                ),
            },
            "timestamp": time.time_ns() // _NS_PER_MS,
            "version": __version__,
        }

    # --- module --------------------------------------------------------------------------------------

    def metrics(self) -> Iterator[MetricSample]:
        for signal, ring in self._rings():
            labels = {"signal": signal}
            yield MetricSample("observability_records", len(ring), labels, "Telemetry records kept")
            yield MetricSample("observability_bytes", ring.bytes, labels, "Bytes of the telemetry records kept")
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

    def snapshot(self) -> Mapping[str, Any]:
        return {
            "backend": "memory",
            **{
                signal: {"records": len(ring), "bytes": ring.bytes, "dropped": ring.dropped}
                for signal, ring in self._rings()
            },
            "malformed_messages": sum(
                count for (_, outcome), count in self._messages.items() if outcome == "malformed"
            ),
        }

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
LOGS_QUERY_KEYS: Final = (
    "trace_id",
    "span_id",
    "severity_min",
    "severity_text",
    "start_time",
    "end_time",
    "offset",
    "limit",
)


def _object(data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FunctionError(DESERIALIZATION_ERROR, "the input must be an object")
    return data


def _optional_str(query: Mapping[str, Any], key: str) -> str | None:
    value = query.get(key)
    if value is not None and not isinstance(value, str):
        raise FunctionError(DESERIALIZATION_ERROR, f"{key} must be a string")
    return value


def _optional_int(query: Mapping[str, Any], key: str) -> int | None:
    value = query.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise FunctionError(DESERIALIZATION_ERROR, f"{key} must be a non-negative integer")
    return value


def _optional_float(query: Mapping[str, Any], key: str) -> float | None:
    value = query.get(key)
    if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise FunctionError(DESERIALIZATION_ERROR, f"{key} must be a number")
    return None if value is None else float(value)


def _window(query: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """``start_time`` and ``end_time`` (Unix milliseconds) in nanoseconds."""
    start, end = _optional_int(query, "start_time"), _optional_int(query, "end_time")
    return (None if start is None else start * _NS_PER_MS), (None if end is None else end * _NS_PER_MS)


def _pairs(query: Mapping[str, Any], key: str) -> set[tuple[str, str]]:
    value = query.get(key)
    if value is None:
        return set()
    if not isinstance(value, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(item, str) for item in pair) for pair in value
    ):
        raise FunctionError(DESERIALIZATION_ERROR, f"{key} must be a list of [key, value] string pairs")
    return {(pair[0], pair[1]) for pair in value}


def _page(records: list[dict[str, Any]], offset: int, limit: int | None) -> list[dict[str, Any]]:
    return records[offset : offset + min(_MAX_LIMIT, _MAX_LIMIT if limit is None else limit)]


def _duration_ms(span: dict[str, Any]) -> float:
    end: int = span["end_time_unix_nano"] or time.time_ns()
    start: int = span["start_time_unix_nano"]
    return max(0, end - start) / _NS_PER_MS


def _internal(span: dict[str, Any]) -> bool:
    """An engine-internal span, hidden from listings unless asked for (the reference's rule)."""
    return any(
        (key == "iii.function.kind" and value == "internal") or (key == "function_id" and value.startswith("engine::"))
        for key, value in span["attributes"]
    )


def _executed_function(span: dict[str, Any]) -> str | None:
    name: str = span["name"]
    return name[len("execute ") :] if name.startswith("execute ") else None


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])
