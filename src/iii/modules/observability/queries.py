"""The queries over the stored records: each function's input read and checked, the filters, sorting, paging,
a trace's tree and the invocation statistics. Pure functions over the records (no I/O, no state); a bad input
raises :class:`~iii.modules.api.FunctionError` (``DESERIALIZATION_ERROR``) with the reason.

Times are in the reference's units: the filters in Unix milliseconds, the records in nanoseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from iii.modules.api import FunctionError
from iii.protocol.errors import DESERIALIZATION_ERROR

NS_PER_MS: Final = 1_000_000
MAX_LIMIT: Final = 10_000
"""At most this many records in one answer."""
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
"""The ``engine::logs::list`` inputs its answer's ``query`` echoes (the reference's)."""
METRICS_QUERY_KEYS: Final = ("start_time", "end_time", "aggregate_interval", "metric_name")
"""The ``engine::metrics::list`` inputs its answer's ``query`` echoes (the reference's)."""

Record = dict[str, Any]


def now_ms() -> int:
    """The answers' ``timestamp``: now, in Unix milliseconds."""
    return time.time_ns() // NS_PER_MS


# --- logs --------------------------------------------------------------------------------------------


def list_logs(records: Iterable[Record], query: Mapping[str, Any], spans: Iterable[Record]) -> tuple[list[Record], int]:
    """``engine::logs::list``: the page of the records ``query`` selects, newest first, and how many it selects.

    Besides the reference's filters, ours: ``service_name`` (a case-insensitive substring of the record's
    service) and ``function_id``: the records logged in a run of that function, i.e. whose span (``span_id``) is
    one of ``spans`` that :func:`function_spans` finds for it. ``spans`` is read only for ``function_id`` (one
    pass); a record whose span is not (yet) among them does not match."""
    trace_id = optional_str(query, "trace_id")
    span_id = optional_str(query, "span_id")
    severity_min = optional_int(query, "severity_min")
    severity_text = optional_str(query, "severity_text")
    service = (optional_str(query, "service_name") or "").lower()
    function_id = optional_str(query, "function_id")
    start_ns, end_ns = window(query)
    offset, limit = optional_int(query, "offset") or 0, optional_int(query, "limit")
    span_ids = None if function_id is None else function_spans(spans, function_id)

    def wanted(record: Record) -> bool:
        stamp = record["timestamp_unix_nano"]
        return (
            (trace_id is None or record["trace_id"] == trace_id)
            and (span_id is None or record["span_id"] == span_id)
            and (severity_min is None or record["severity_number"] >= severity_min)
            and (severity_text is None or record["severity_text"].lower() == severity_text.lower())
            and (start_ns is None or stamp >= start_ns)
            and (end_ns is None or stamp <= end_ns)
            and (not service or service in record["service_name"].lower())
            and (span_ids is None or record["span_id"] in span_ids)
        )

    found = sorted(
        (record for record in records if wanted(record)), key=lambda r: r["timestamp_unix_nano"], reverse=True
    )
    return page(found, offset, limit), len(found)


# --- traces ------------------------------------------------------------------------------------------


def list_traces(spans: Iterable[Record], query: Mapping[str, Any]) -> tuple[list[Record], int, int, int]:
    """``engine::traces::list``: the page of the spans ``query`` selects (root spans unless ``search_all_spans``),
    how many it selects, and the page's offset and limit."""
    offset, limit = optional_int(query, "offset") or 0, optional_int(query, "limit") or 100
    trace_id = optional_str(query, "trace_id")
    trace_ids = query.get("trace_ids")
    if trace_ids is not None and not (isinstance(trace_ids, list) and all(isinstance(item, str) for item in trace_ids)):
        raise FunctionError(DESERIALIZATION_ERROR, "trace_ids must be a list of strings")
    wanted_ids = {trace_id} if trace_id is not None else set(trace_ids) if trace_ids is not None else None
    service = (optional_str(query, "service_name") or "").lower()
    name = (optional_str(query, "name") or "").lower()
    status = (optional_str(query, "status") or "").lower()
    min_ms, max_ms = optional_float(query, "min_duration_ms"), optional_float(query, "max_duration_ms")
    start_ns, end_ns = window(query)
    required = pairs(query, "attributes")
    excluded = pairs(query, "exclude_attributes")
    include_internal = query.get("include_internal") is True
    search_all = query.get("search_all_spans") is True
    spans = list(spans)
    present = {span["span_id"] for span in spans}

    def wanted(span: Record) -> bool:
        attributes = {(pair[0], pair[1]) for pair in span["attributes"]}
        duration = duration_ms(span)
        return (
            (search_all or span["parent_span_id"] is None or span["parent_span_id"] not in present)
            and (wanted_ids is None or span["trace_id"] in wanted_ids)
            and (include_internal or not internal(span))
            and not (attributes & excluded)
            and required <= attributes
            and service in span["service_name"].lower()
            and name in span["name"].lower()
            and status in span["status"].lower()
            and (min_ms is None or duration >= min_ms)
            and (max_ms is None or duration <= max_ms)
            and (start_ns is None or span["end_time_unix_nano"] >= start_ns)
            and (end_ns is None or span["start_time_unix_nano"] <= end_ns)
        )

    found = [span for span in spans if wanted(span)]
    sort_by = query.get("sort_by")
    key: Callable[[Record], Any] = {
        "duration": duration_ms,
        "duration_ms": duration_ms,
        "service_name": lambda span: span["service_name"],
        "name": lambda span: span["name"],
    }.get(sort_by if isinstance(sort_by, str) else "", lambda span: span["start_time_unix_nano"])
    sort_order = query.get("sort_order")
    found.sort(key=key, reverse=isinstance(sort_order, str) and sort_order.lower() == "desc")
    return page(found, offset, limit), len(found), offset, limit


def trace_tree(spans: Iterable[Record], query: Mapping[str, Any]) -> list[Record]:
    """``engine::traces::tree``: the roots of the trace ``query["trace_id"]`` names, each span a copy with its
    ``children`` (in start order); a span whose parent is not stored is a root."""
    trace_id = optional_str(query, "trace_id")
    if trace_id is None:
        raise FunctionError(DESERIALIZATION_ERROR, "trace_id (a string) is required")
    ordered = sorted((span for span in spans if span["trace_id"] == trace_id), key=lambda s: s["start_time_unix_nano"])
    nodes = {span["span_id"]: {**span, "children": []} for span in ordered}
    roots: list[Record] = []
    for node in nodes.values():
        parent = nodes.get(node["parent_span_id"]) if node["parent_span_id"] is not None else None
        (parent["children"] if parent is not None and parent is not node else roots).append(node)
    return roots


# --- metrics -----------------------------------------------------------------------------------------


def list_sdk_metrics(metrics: Iterable[Record], query: Mapping[str, Any]) -> list[Record]:
    """``engine::metrics::list``'s ``sdk_metrics``: the stored metrics ``query`` selects, oldest first."""
    metric_name = optional_str(query, "metric_name")
    start_ns, end_ns = window(query)
    return [
        metric
        for metric in metrics
        if (metric_name is None or metric["name"] == metric_name)
        and (start_ns is None or metric["timestamp_unix_nano"] >= start_ns)
        and (end_ns is None or metric["timestamp_unix_nano"] <= end_ns)
    ]


def invocation_metrics(spans: Iterable[Record]) -> dict[str, Any]:
    """Invocations and their latencies, from the spans of function executions (``execute <id>``, what the SDKs
    record around a handler)."""
    by_function: dict[str, int] = {}
    durations: list[float] = []
    errors = 0
    for span in spans:
        function_id = executed_function(span)
        if function_id is None:
            continue
        by_function[function_id] = by_function.get(function_id, 0) + 1
        durations.append(duration_ms(span))
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
            "p50_duration_ms": percentile(durations, 0.50),
            "p95_duration_ms": percentile(durations, 0.95),
            "p99_duration_ms": percentile(durations, 0.99),
            "min_duration_ms": durations[0] if durations else 0.0,
            "max_duration_ms": durations[-1] if durations else 0.0,
        },
    }


# --- inputs ------------------------------------------------------------------------------------------


def as_object(data: Any) -> dict[str, Any]:
    """A function's input: an object, or none (``{}``)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FunctionError(DESERIALIZATION_ERROR, "the input must be an object")
    return data


def optional_str(query: Mapping[str, Any], key: str) -> str | None:
    value = query.get(key)
    if value is not None and not isinstance(value, str):
        raise FunctionError(DESERIALIZATION_ERROR, f"{key} must be a string")
    return value


def optional_int(query: Mapping[str, Any], key: str) -> int | None:
    value = query.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise FunctionError(DESERIALIZATION_ERROR, f"{key} must be a non-negative integer")
    return value


def optional_float(query: Mapping[str, Any], key: str) -> float | None:
    value = query.get(key)
    if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise FunctionError(DESERIALIZATION_ERROR, f"{key} must be a number")
    return None if value is None else float(value)


def window(query: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """``start_time`` and ``end_time`` (Unix milliseconds) in nanoseconds."""
    start, end = optional_int(query, "start_time"), optional_int(query, "end_time")
    return (None if start is None else start * NS_PER_MS), (None if end is None else end * NS_PER_MS)


def pairs(query: Mapping[str, Any], key: str) -> set[tuple[str, str]]:
    """A list of ``[key, value]`` string pairs, as a set of tuples."""
    value = query.get(key)
    if value is None:
        return set()
    if not isinstance(value, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(item, str) for item in pair) for pair in value
    ):
        raise FunctionError(DESERIALIZATION_ERROR, f"{key} must be a list of [key, value] string pairs")
    return {(pair[0], pair[1]) for pair in value}


# --- records -----------------------------------------------------------------------------------------


def page(records: list[Record], offset: int, limit: int | None) -> list[Record]:
    """``limit`` records (at most :data:`MAX_LIMIT`) from ``offset``."""
    return records[offset : offset + min(MAX_LIMIT, MAX_LIMIT if limit is None else limit)]


def duration_ms(span: Record) -> float:
    """A span's duration; one not ended yet lasts until now."""
    end: int = span["end_time_unix_nano"] or time.time_ns()
    start: int = span["start_time_unix_nano"]
    return max(0, end - start) / NS_PER_MS


def internal(span: Record) -> bool:
    """An engine-internal span, hidden from listings unless asked for (the reference's rule)."""
    return any(
        (key == "iii.function.kind" and value == "internal") or (key == "function_id" and value.startswith("engine::"))
        for key, value in span["attributes"]
    )


def executed_function(span: Record) -> str | None:
    """The function a span of a function execution (``execute <id>``) ran; None for any other span."""
    name: str = span["name"]
    return name[len("execute ") :] if name.startswith("execute ") else None


def function_spans(spans: Iterable[Record], function_id: str) -> set[str]:
    """The ids of the spans of runs of ``function_id``: a handler's ``execute <id>`` (the name is all the official
    PyPI and npm SDKs and ours put on it: no attribute names the function) and the engine's ``call <id>`` (with
    the attribute ``function_id``; the only span of a call the engine runs itself or over HTTP). Not the other
    engine spans that carry the attribute (``enqueue <id> → <queue>``): they are not a run of the function."""
    executed, called = f"execute {function_id}", f"call {function_id}"
    return {
        span["span_id"]
        for span in spans
        if span["name"] == executed
        or (
            span["name"] == called
            and any(pair[0] == "function_id" and pair[1] == function_id for pair in span["attributes"])
        )
    }


def percentile(ordered: list[float], fraction: float) -> float:
    """The value at ``fraction`` of a sorted list (0.0 when it is empty)."""
    if not ordered:
        return 0.0
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])
