"""What the console's Logs and Trace views show, asked over ``/console/query``
(:class:`~iii.modules.api.ConsoleQueries`).

The Logs view asks ``{"view": "logs", "severity_min"?, "service"?, "text"?, "after"?, "limit"?}`` and gets::

    {"logs": [<stored log record>, …], "shown", "total", "cursor"}

the newest ``limit`` (default and at most :data:`MAX_LOGS`) of the records the filters select, oldest first
(a tail), ``total`` how many they select. ``severity_min`` is a severity number, ``service`` a case-insensitive
substring of the service name, ``text`` one of the body. ``after`` is the ``cursor`` of a previous answer: only
the records stored since are looked at (a live tail: records arrive with their senders' clocks, so a time would
miss a late one; the cursor counts what the store kept).

The Trace view asks ``{"view": "trace", "trace_id"}`` and gets::

    {"trace_id", "start_ns", "spans": [{"span_id", "parent_span_id", "name", "service_name", "status", "depth",
     "offset_ms", "duration_ms"}], "shown", "total"}

its spans in tree order (each after its parent, siblings by start; a span whose parent is not stored is a
root), at most :data:`MAX_SPANS`; ``offset_ms`` is from the trace's first start. A malformed query raises
``ValueError`` with the reason.
"""

from __future__ import annotations

from typing import Any, Final

from . import queries
from .store import Ring

MAX_LOGS: Final = 200
"""At most this many log records in one answer."""
MAX_SPANS: Final = 500
"""At most this many spans of a trace in one answer."""


def console_view(logs: Ring[dict[str, Any]], spans: Ring[dict[str, Any]], query: Any) -> dict[str, Any]:
    """The answer to one query of the page (see the module docstring); ``ValueError`` for a malformed one."""
    if not isinstance(query, dict):
        raise ValueError("an observability console query is an object")
    view = query.get("view")
    if view == "logs":
        return _logs(logs, query)
    if view == "trace":
        return _trace(spans, query)
    raise ValueError('`view` is "logs" or "trace"')


def _int(query: dict[str, Any], key: str, default: int) -> int:
    value = query.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"`{key}` must be a non-negative integer")
    return value


def _text(query: dict[str, Any], key: str) -> str:
    value = query.get(key) or ""
    if not isinstance(value, str):
        raise ValueError(f"`{key}` must be a string")
    return value.lower()


def _logs(logs: Ring[dict[str, Any]], query: dict[str, Any]) -> dict[str, Any]:
    severity_min = _int(query, "severity_min", 0)
    service, text = _text(query, "service"), _text(query, "text")
    limit = min(_int(query, "limit", MAX_LOGS), MAX_LOGS)
    after = query.get("after")
    if after is not None:
        after = _int(query, "after", 0)
    records = list(logs) if after is None else logs.since(after)

    def wanted(record: dict[str, Any]) -> bool:
        body = record["body"]
        return (
            record["severity_number"] >= severity_min
            and service in record["service_name"].lower()
            and (not text or text in (body if isinstance(body, str) else str(body)).lower())
        )

    found = [record for record in records if wanted(record)]
    shown = found[len(found) - limit :] if limit else []
    return {"logs": shown, "shown": len(shown), "total": len(found), "cursor": logs.kept}


def _trace(spans: Ring[dict[str, Any]], query: dict[str, Any]) -> dict[str, Any]:
    trace_id = query.get("trace_id")
    if not isinstance(trace_id, str) or not trace_id:
        raise ValueError("`trace_id` (a string) is required")
    roots = queries.trace_tree(spans, {"trace_id": trace_id})
    ordered: list[tuple[int, dict[str, Any]]] = []
    stack = [(0, root) for root in reversed(roots)]
    while stack:  # depth first, in start order, without recursion (a trace may be deep)
        depth, node = stack.pop()
        ordered.append((depth, node))
        stack.extend((depth + 1, child) for child in reversed(node["children"]))
    start = min((node["start_time_unix_nano"] for _, node in ordered), default=0)
    shown = [
        {
            "span_id": node["span_id"],
            "parent_span_id": node["parent_span_id"],
            "name": node["name"],
            "service_name": node["service_name"],
            "status": node["status"],
            "depth": depth,
            "offset_ms": (node["start_time_unix_nano"] - start) / queries.NS_PER_MS,
            "duration_ms": queries.duration_ms(node),
        }
        for depth, node in ordered[:MAX_SPANS]
    ]
    return {"trace_id": trace_id, "start_ns": start, "spans": shown, "shown": len(shown), "total": len(ordered)}
