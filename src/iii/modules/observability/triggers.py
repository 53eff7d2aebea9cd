"""The observability module's trigger types, ``log`` and ``trace``, as the reference's observability worker has
them; fed by the records the module keeps (a :class:`~.module.RecordListener`).

``log``, config ``{level?}``: the bound function is called with each log record kept from then on whose level is
``level`` (``trace``, ``debug``, ``info``, ``warn``, ``error``, or ``fatal``; case-insensitive; omitted or
``all``: every record). A record's level is the range its severity number falls in (1-4 trace, ... 17-20 error,
21-24 fatal), or its severity text when the number is 0. The payload is the record in the reference's shape:
``timestamp_unix_nano``, ``observed_timestamp_unix_nano``, ``severity_number``, ``severity_text``, ``body``,
``attributes``, ``trace_id``, ``span_id``, ``resource``, ``service_name``, ``instrumentation_scope_name``,
``instrumentation_scope_version``.

``trace``, config ``{service_name?, status?}`` (each compared case-insensitively, ANDed): a coalesced "traces
changed" tick. Spans kept within a window of :data:`TRACE_WINDOW_S` (from the first one) are gathered; at its end
each binding is called once with ``{"trace_ids": [...]}``, the distinct (sorted) trace ids of the window's spans
that match its config. Spans the engine makes (its service name, :data:`ENGINE_SERVICE_NAME`) and the engine's
internal spans (the rule ``engine::traces::list`` hides them by) do not count.

No loop: every delivery of either type is a call in a trace of its own that the module starts (the callee's SDK
records the handler's span, and its logs, in that trace), and the module knows its own trace ids by their make
(half of the id is a keyed hash of the other half). Records and spans of those traces fire neither trigger type
(nor do the spans of a function bound to ``trace``, the reference's rule): a handler that logs, or calls
functions that log, is not told of its own lines. They are still kept and listed.

Delivery: each binding is called in order, one call at a time, never holding up the ingestion of records; the
records waiting for one binding are bounded (:data:`MAX_WAITING`): past it they are dropped for that binding
and counted (``iii_observability_trigger_deliveries_total{outcome="dropped"}``). A ``trace`` tick that finds the
binding's previous tick still waiting joins it instead. Failed calls are counted and logged, not retried. The
binding's metadata goes with each call as its invocation metadata (as the reference sends it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from iii.modules.api import BindingInfo, InvocationError, MetricSample, ModuleHost

from .queries import internal

log = logging.getLogger("iii.modules.observability")

LOG_TRIGGER: Final = "log"
TRACE_TRIGGER: Final = "trace"
TRACE_WINDOW_S: Final = 0.3
"""The ``trace`` trigger's coalescing window (the reference's 300 ms)."""
MAX_WAITING: Final = 10_000
"""Deliveries that may wait for one binding (the one in flight included) before more are dropped for it."""
MAX_WINDOW_ENTRIES: Final = 100_000
"""Distinct (trace, service, status) triples one ``trace`` window gathers; past it spans are not counted (a
flood's window still ticks, with the traces gathered so far)."""
ENGINE_SERVICE_NAME: Final = "iii"
"""The service name of the spans the engine records itself (the reference's default ``OTEL_SERVICE_NAME``)."""
LOG_PAYLOAD_FIELDS: Final = (
    "timestamp_unix_nano",
    "observed_timestamp_unix_nano",
    "severity_number",
    "severity_text",
    "body",
    "attributes",
    "trace_id",
    "span_id",
    "resource",
    "service_name",
    "instrumentation_scope_name",
    "instrumentation_scope_version",
)
"""A ``log`` delivery's payload: the reference's fields of a record, in its order."""
LEVELS: Final = ("trace", "debug", "info", "warn", "error", "fatal")
"""The levels, in the order of the severity number ranges (1-4, 5-8, ... 21-24)."""
_LEVEL_NAMES: Final = {**{level: level for level in LEVELS}, "warning": "warn", "critical": "fatal"}
"""Severity texts (lower case) -> their level, for a record without a severity number."""
_TRACE_FILTERS: Final = ("service_name", "status")


def traceparent_ids(traceparent: str | None) -> tuple[str | None, str | None]:
    """The trace id and span id a W3C traceparent (``00-<32 hex>-<16 hex>-<2 hex>``) names; (None, None) for
    none, or one of another shape."""
    parts = traceparent.split("-") if traceparent else []
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None, None
    trace_id, span_id = parts[1].lower(), parts[2].lower()
    if not all(c in "0123456789abcdef" for c in trace_id + span_id) or set(trace_id) == {"0"}:
        return None, None
    return trace_id, span_id


def record_level(record: dict[str, Any]) -> str | None:
    """The level of a log record: by its severity number, else its text; None when it has neither."""
    number = record.get("severity_number")
    if isinstance(number, int) and 1 <= number <= 24:
        return LEVELS[(number - 1) // 4]
    text = record.get("severity_text")
    return _LEVEL_NAMES.get(text.lower()) if isinstance(text, str) else None


class DeliveryTraces:
    """The trace ids the module starts its deliveries in, recognisable among all others without keeping them:
    the last 16 hex digits are a keyed hash (a key of this module's own) of the first 16."""

    def __init__(self) -> None:
        self._keyed = hashlib.blake2b(digest_size=8, key=os.urandom(16))

    def _tag(self, head: str) -> str:
        tag = self._keyed.copy()  # cheaper than keying a new one for every record
        tag.update(head.encode())
        return tag.hexdigest()

    def traceparent(self) -> str:
        """A new W3C traceparent (sampled) in a trace of the module's own."""
        head = os.urandom(8).hex()
        return f"00-{head}{self._tag(head)}-{os.urandom(8).hex()}-01"

    def caused(self, trace_id: object) -> bool:
        """``trace_id`` is one of the module's delivery traces."""
        return isinstance(trace_id, str) and len(trace_id) == 32 and self._tag(trace_id[:16]) == trace_id[16:]


@dataclass(slots=True)
class _Queue:
    """The deliveries waiting for one binding, and the task calling them."""

    binding: BindingInfo
    waiting: deque[dict[str, Any]] = field(default_factory=deque)
    """Not called yet, oldest first."""
    in_flight: bool = False
    task: asyncio.Task[None] | None = None


class Deliveries:
    """Calls of the bound functions: each binding's in order, one at a time, at most :data:`MAX_WAITING` waiting
    (further ones dropped and counted); a failed call counted and logged."""

    def __init__(self, host: ModuleHost, traces: DeliveryTraces, *, max_waiting: int = MAX_WAITING) -> None:
        self._host = host
        self._traces = traces
        self._max_waiting = max_waiting
        self._queues: dict[str, _Queue] = {}
        self._dropping: set[str] = set()
        """Bindings whose deliveries were dropped since they last had none waiting (logged once per episode)."""
        self.counts: Counter[tuple[str, str]] = Counter()
        """(trigger type, outcome: delivered, failed, dropped) -> deliveries."""
        self.closed = False

    def deliver(self, binding: BindingInfo, payload: dict[str, Any]) -> None:
        """Call ``binding``'s function with ``payload`` after its earlier deliveries (never waits)."""
        if self.closed:
            return
        queue = self._queues.get(binding.binding_id)
        if queue is None:
            queue = self._queues[binding.binding_id] = _Queue(binding)
        waiting = len(queue.waiting) + queue.in_flight
        if waiting >= self._max_waiting:
            self.counts[binding.trigger_type, "dropped"] += 1
            if binding.binding_id not in self._dropping:
                self._dropping.add(binding.binding_id)
                log.warning(
                    "%s trigger: %s has %d deliveries waiting for it; more are dropped until it catches up",
                    binding.trigger_type,
                    binding.function_id,
                    self._max_waiting,
                )
            return
        queue.waiting.append(payload)
        if queue.task is None:
            queue.task = asyncio.get_running_loop().create_task(self._pump(queue))

    def last_waiting(self, binding_id: str) -> dict[str, Any] | None:
        """The last delivery still waiting for ``binding_id`` (not the one in flight), to be joined; or None."""
        queue = self._queues.get(binding_id)
        return queue.waiting[-1] if queue is not None and queue.waiting else None

    def forget(self, binding_id: str) -> None:
        """Drop what waits for a binding that ended (a call in flight finishes)."""
        queue = self._queues.pop(binding_id, None)
        if queue is not None:
            queue.waiting.clear()
        self._dropping.discard(binding_id)

    async def _pump(self, queue: _Queue) -> None:
        binding = queue.binding
        try:
            while queue.waiting:
                payload = queue.waiting.popleft()
                queue.in_flight = True
                try:
                    await self._host.invoke(
                        binding.function_id,
                        payload,
                        metadata=binding.metadata,
                        traceparent=self._traces.traceparent(),
                    )
                except InvocationError as error:
                    self.counts[binding.trigger_type, "failed"] += 1
                    log.warning("%s trigger: %s failed: %s", binding.trigger_type, binding.function_id, error)
                else:
                    self.counts[binding.trigger_type, "delivered"] += 1
                queue.in_flight = False
        finally:
            queue.task = None
            if self._queues.get(binding.binding_id) is queue:
                del self._queues[binding.binding_id]
            self._dropping.discard(binding.binding_id)

    async def settle(self) -> None:
        """Wait until the deliveries under way (and those waiting) are done."""
        while tasks := [queue.task for queue in self._queues.values() if queue.task is not None]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stop delivering (what waits is dropped, a call in flight stops being waited for)."""
        self.closed = True
        tasks = [queue.task for queue in self._queues.values() if queue.task is not None]
        self._queues.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class LogTriggers:
    """The provider of the ``log`` trigger type (:class:`~iii.modules.api.TriggerProvider`)."""

    def __init__(self, deliveries: Deliveries, traces: DeliveryTraces) -> None:
        self._deliveries = deliveries
        self._traces = traces
        self._bindings: dict[str, tuple[BindingInfo, str | None]] = {}
        self.skipped = 0
        """Records not delivered because a trigger's delivery caused them (the loop-break)."""

    def activate(self, binding: BindingInfo) -> str | None:
        level = binding.config.get("level")
        if level is not None:
            if not isinstance(level, str) or (level.lower() not in LEVELS and level.lower() != "all"):
                return f"Failed to parse trigger config: `level` must be one of {', '.join(LEVELS)} or all"
            level = None if level.lower() == "all" else level.lower()
        self._bindings[binding.binding_id] = (binding, level)
        return None

    def deactivate(self, binding: BindingInfo) -> None:
        self._bindings.pop(binding.binding_id, None)
        self._deliveries.forget(binding.binding_id)

    def on_logs(self, records: list[dict[str, Any]]) -> None:
        if not self._bindings:
            return
        bindings = list(self._bindings.values())
        for record in records:
            level = record_level(record)
            matching = [binding for binding, wanted in bindings if wanted is None or wanted == level]
            if not matching:
                continue
            if self._traces.caused(record.get("trace_id")):
                self.skipped += 1
                continue
            payload = {name: record.get(name) for name in LOG_PAYLOAD_FIELDS}
            for binding in matching:
                self._deliveries.deliver(binding, payload)


@dataclass(frozen=True, slots=True)
class _TraceBinding:
    binding: BindingInfo
    service_name: str | None
    status: str | None


class TraceTriggers:
    """The provider of the ``trace`` trigger type (:class:`~iii.modules.api.TriggerProvider`)."""

    def __init__(self, deliveries: Deliveries, traces: DeliveryTraces, *, window_s: float = TRACE_WINDOW_S) -> None:
        self._deliveries = deliveries
        self._traces = traces
        self._window_s = window_s
        self._bindings: dict[str, _TraceBinding] = {}
        self._window: set[tuple[str, str, str]] = set()
        """(trace id, service name, status), lower case but the id, of the spans kept in the current window."""
        self._flush: asyncio.TimerHandle | None = None
        self.skipped = 0
        """Spans not counted because a trigger's delivery caused them (the loop-break)."""
        self.ticks = 0
        """Windows that ended with span activity."""

    def activate(self, binding: BindingInfo) -> str | None:
        filters: dict[str, str | None] = {}
        for name in _TRACE_FILTERS:
            value = binding.config.get(name)
            if value is not None and not isinstance(value, str):
                return f"Failed to parse trigger config: `{name}` must be a string"
            filters[name] = value.lower() if value is not None else None
        self._bindings[binding.binding_id] = _TraceBinding(binding, filters["service_name"], filters["status"])
        return None

    def deactivate(self, binding: BindingInfo) -> None:
        self._bindings.pop(binding.binding_id, None)
        self._deliveries.forget(binding.binding_id)

    def on_spans(self, records: list[dict[str, Any]]) -> None:
        if not self._bindings:
            return
        bound = {entry.binding.function_id for entry in self._bindings.values()}
        window = self._window
        for span in records:
            if self._traces.caused(span.get("trace_id")) or _function_of(span) in bound:
                self.skipped += 1
                continue
            service = str(span.get("service_name") or "")
            if service == ENGINE_SERVICE_NAME or internal(span):
                continue
            if len(window) < MAX_WINDOW_ENTRIES:
                window.add((str(span["trace_id"]), service.lower(), str(span.get("status") or "").lower()))
        if window and self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self._window_s, self._tick)

    def _tick(self) -> None:
        self._flush = None
        window, self._window = self._window, set()
        if not window or self._deliveries.closed:
            return
        self.ticks += 1
        for entry in list(self._bindings.values()):
            trace_ids = {
                trace_id
                for trace_id, service, status in window
                if (entry.service_name is None or service == entry.service_name)
                and (entry.status is None or status == entry.status)
            }
            if not trace_ids:
                continue
            waiting = self._deliveries.last_waiting(entry.binding.binding_id)
            if waiting is not None:  # the previous tick has not gone yet: this one joins it
                waiting["trace_ids"] = sorted(trace_ids.union(waiting["trace_ids"]))
            else:
                self._deliveries.deliver(entry.binding, {"trace_ids": sorted(trace_ids)})

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._window.clear()


def _function_of(span: dict[str, Any]) -> str | None:
    """The function a span was recorded for (its ``function_id`` attribute, or an ``execute <id>`` name)."""
    for key, value in span.get("attributes") or ():
        if key == "function_id":
            return str(value)
    name = span.get("name")
    return name[len("execute ") :] if isinstance(name, str) and name.startswith("execute ") else None


class ObservabilityTriggers:
    """Both trigger types, fed by the module's records (a :class:`~.module.RecordListener`), and their counts."""

    def __init__(self, host: ModuleHost, *, window_s: float = TRACE_WINDOW_S, max_waiting: int = MAX_WAITING) -> None:
        traces = DeliveryTraces()
        self.deliveries = Deliveries(host, traces, max_waiting=max_waiting)
        self.log = LogTriggers(self.deliveries, traces)
        self.trace = TraceTriggers(self.deliveries, traces, window_s=window_s)

    def register(self, host: ModuleHost) -> None:
        host.register_trigger_type(LOG_TRIGGER, self.log, description="Log records as they are kept, by level")
        host.register_trigger_type(
            TRACE_TRIGGER, self.trace, description="Coalesced ticks naming the traces with span activity"
        )

    def on_records(self, signal: str, records: list[dict[str, Any]], raw: bytes | None) -> None:
        if self.deliveries.closed:
            return
        if signal == "logs":
            self.log.on_logs(records)
        elif signal == "spans":
            self.trace.on_spans(records)

    async def close(self) -> None:
        self.trace.close()
        await self.deliveries.close()

    def metrics(self) -> Iterator[MetricSample]:
        for trigger_type in (LOG_TRIGGER, TRACE_TRIGGER):
            for outcome in ("delivered", "failed", "dropped"):
                yield MetricSample(
                    "observability_trigger_deliveries_total",
                    self.deliveries.counts[trigger_type, outcome],
                    {"trigger_type": trigger_type, "outcome": outcome},
                    "Deliveries of the log and trace trigger types (dropped: too many waiting for a binding)",
                    "counter",
                )
            skipped = self.log.skipped if trigger_type == LOG_TRIGGER else self.trace.skipped
            yield MetricSample(
                "observability_trigger_loop_skipped_total",
                skipped,
                {"trigger_type": trigger_type},
                "Records and spans a trigger's own delivery caused, which fire no trigger",
                "counter",
            )
