"""Forwarding every record the module keeps to an OTLP/HTTP collector (``otlp_endpoint``), so that a team with a
collector keeps using it.

**What is sent.** Each batch of records the module keeps (:meth:`OtlpExporter.on_records`) is queued as an
OTLP/JSON export request: the body the SDK sent, unchanged, when the records came from one message; else the
records written as one (:mod:`.encoding`). A sender task on the engine's loop takes what is queued every
:data:`BATCH_DELAY_S`, joins each signal's requests into POSTs of at most :data:`MAX_POST_BYTES` and sends them to
``<endpoint>/v1/logs``, ``/v1/traces`` and ``/v1/metrics`` (``Content-Type: application/json``, the configured
headers), one at a time.

**Failures.** A connection error, a timeout, 429 or a 5xx status is retried (the same POST), after an exponential
backoff from :data:`FIRST_BACKOFF_S` to :data:`MAX_BACKOFF_S` with jitter, or after the collector's
``Retry-After`` (at most :data:`MAX_RETRY_AFTER_S`), until it is accepted or the engine stops. Any other status
(400, 401, 413, ...) rejects the POST: its records are dropped and counted. Meanwhile the queue goes on filling:

**Bounds.** The queue holds at most ``otlp_queue_max_records`` records and ``otlp_queue_max_bytes`` bytes of
bodies (plus the POST being sent); past either bound the oldest batches go, counted. Queuing never waits and
never fails: ingestion and the engine's loop do not depend on the collector. At shutdown what is queued gets
one attempt of at most :data:`SHUTDOWN_FLUSH_S`; what is not sent then is counted as dropped.

Counted in ``iii_observability_export_records_total{signal, outcome}`` (``exported``; dropped: ``queue_full``,
``rejected``, ``shutdown``), ``iii_observability_export_retries_total{signal}`` and the gauges
``iii_observability_export_queued_records`` and ``..._queued_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import aiohttp
import msgspec

from iii.modules.api import MetricSample

from . import encoding

log = logging.getLogger("iii.modules.observability")

PATHS: Final = {"logs": "/v1/logs", "spans": "/v1/traces", "metrics": "/v1/metrics"}
"""Where each signal is posted, under the endpoint (OTLP/HTTP's paths)."""
BATCH_DELAY_S: Final = 0.2
"""How long the sender lets records gather after the first one is queued, so that one POST carries many."""
MAX_POST_BYTES: Final = 1024 * 1024
"""A POST joins queued requests of one signal up to this size (a larger single request goes alone)."""
FIRST_BACKOFF_S: Final = 0.5
MAX_BACKOFF_S: Final = 5.0
"""Retries come at most this far apart: a collector back up gets the queue soon after."""
MAX_RETRY_AFTER_S: Final = 30.0
"""The longest ``Retry-After`` obeyed."""
SHUTDOWN_FLUSH_S: Final = 2.0
"""At shutdown, how long the queue's last POSTs may take together (without retries)."""
WARN_INTERVAL_S: Final = 60.0
"""A failing collector is logged (a warning) at most this often; every failure is counted."""
RETRYABLE: Final = frozenset((429,))
"""Statuses retried besides every 5xx."""

SIGNALS: Final = ("logs", "spans", "metrics")
DROP_OUTCOMES: Final = ("queue_full", "rejected", "shutdown")


def parse_headers(text: str | None) -> dict[str, str]:
    """Headers in ``OTEL_EXPORTER_OTLP_HEADERS``'s form, ``key=value`` pairs separated by commas, each value
    percent-decoded; ``ValueError`` naming a pair without ``=`` or with an empty key."""
    headers: dict[str, str] = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"otlp_headers: {pair.strip()!r} is not key=value")
        headers[key.strip()] = unquote(value.strip())
    return headers


def check_endpoint(url: str) -> str:
    """``url`` without a trailing slash, if it is an http:// or https:// URL with a host; ``ValueError`` else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"otlp_endpoint must be an http:// or https:// URL (http://host:4318), got {url!r}")
    return url.rstrip("/")


@dataclass(slots=True)
class _Batch:
    """One export request waiting: its body and how many records it holds."""

    body: bytes
    records: int
    seq: int
    """Queued order across the signals (the oldest goes first when the queue is full)."""


class OtlpExporter:
    """A :class:`~.module.RecordListener` that forwards to a collector (see the module docstring). Call
    :meth:`start` on the engine's loop before records come, :meth:`stop` at the end."""

    def __init__(
        self,
        endpoint: str,
        headers: Mapping[str, str] | None = None,
        *,
        max_records: int = 20_000,
        max_bytes: int = 16 * 1024 * 1024,
        timeout_s: float = 10.0,
    ) -> None:
        self.endpoint = check_endpoint(endpoint)
        self._headers = {**(headers or {}), "Content-Type": "application/json"}
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._queues: dict[str, deque[_Batch]] = {signal: deque() for signal in SIGNALS}
        self.queued_records = 0
        self.queued_bytes = 0
        self._seq = 0
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._sender: asyncio.Task[None] | None = None
        self._sending: tuple[str, list[_Batch]] | None = None
        """The POST being sent (or waiting to be retried), out of the queue."""
        self.counts: dict[tuple[str, str], int] = {}
        """(signal, outcome) -> records: ``exported`` or one of :data:`DROP_OUTCOMES`."""
        self.retries: dict[str, int] = dict.fromkeys(SIGNALS, 0)
        self._last_warning = -WARN_INTERVAL_S

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        self._sender = asyncio.get_running_loop().create_task(self._send_forever(), name="iii-otlp-export")

    async def stop(self) -> None:
        """Stop sending; give what is queued one last attempt of at most :data:`SHUTDOWN_FLUSH_S` (no retries);
        count what is left as dropped."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        if self._session is None:
            return
        if self._sending is not None:  # interrupted: it goes first
            signal, batches = self._sending
            self._sending = None
            for batch in reversed(batches):
                self._queues[signal].appendleft(batch)
                self.queued_records += batch.records
                self.queued_bytes += len(batch.body)
        try:
            async with asyncio.timeout(SHUTDOWN_FLUSH_S):
                while (taken := self._take()) is not None:
                    self._sending = taken
                    if await self._post(*taken) != "done":
                        break
                    self._sending = None
        except TimeoutError:
            pass
        finally:
            for signal in SIGNALS:
                for batch in self._drain(signal):
                    self._count(signal, "shutdown", batch.records)
            if self._sending is not None:
                signal, batches = self._sending
                self._count(signal, "shutdown", sum(batch.records for batch in batches))
                self._sending = None
            await self._session.close()
            self._session = None

    # --- queueing (on the engine's loop, never waits) --------------------------------------------------------

    def on_records(self, signal: str, records: list[dict[str, Any]], raw: bytes | None) -> None:
        """Queue ``records`` (a :class:`~.module.RecordListener`): ``raw`` as it is, else the records encoded."""
        if signal not in self._queues or not records:
            return
        body = raw if raw is not None else encoding.encode(signal, records)
        self._seq += 1
        self._queues[signal].append(_Batch(body, len(records), self._seq))
        self.queued_records += len(records)
        self.queued_bytes += len(body)
        while self.queued_records > self.max_records or self.queued_bytes > self.max_bytes:
            oldest = min(
                (queue for queue in self._queues.values() if queue), key=lambda queue: queue[0].seq, default=None
            )
            if oldest is None:
                break
            dropped = oldest.popleft()
            self.queued_records -= dropped.records
            self.queued_bytes -= len(dropped.body)
            self._count(self._signal_of(oldest), "queue_full", dropped.records)
        self._wake.set()

    def _signal_of(self, queue: deque[_Batch]) -> str:
        return next(signal for signal, candidate in self._queues.items() if candidate is queue)

    def _take(self) -> tuple[str, list[_Batch]] | None:
        """The next POST: the signal whose oldest batch is the oldest, with its following batches up to
        :data:`MAX_POST_BYTES`; None when nothing is queued."""
        waiting = [signal for signal in SIGNALS if self._queues[signal]]
        if not waiting:
            return None
        signal = min(waiting, key=lambda name: self._queues[name][0].seq)
        queue = self._queues[signal]
        batches = [queue.popleft()]
        size = len(batches[0].body)
        while queue and size + len(queue[0].body) <= MAX_POST_BYTES:
            size += len(queue[0].body)
            batches.append(queue.popleft())
        self.queued_records -= sum(batch.records for batch in batches)
        self.queued_bytes -= size
        return signal, batches

    def _drain(self, signal: str) -> Iterator[_Batch]:
        queue = self._queues[signal]
        while queue:
            batch = queue.popleft()
            self.queued_records -= batch.records
            self.queued_bytes -= len(batch.body)
            yield batch

    # --- sending ---------------------------------------------------------------------------------------------

    async def _send_forever(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(BATCH_DELAY_S)  # let a batch gather
            self._wake.clear()
            while (taken := self._take()) is not None:
                self._sending = taken
                try:
                    await self._deliver(*taken)
                except Exception:  # a bug here must not end the forwarding
                    log.exception("OTLP export failed on %s records: dropped", taken[0])
                    self._count(taken[0], "rejected", sum(batch.records for batch in taken[1]))
                self._sending = None

    async def _deliver(self, signal: str, batches: list[_Batch]) -> None:
        """POST ``batches`` until done, waiting between the attempts that should be retried."""
        backoff = FIRST_BACKOFF_S
        while (outcome := await self._post(signal, batches)) != "done":
            wait = outcome if isinstance(outcome, float) else backoff * random.uniform(0.5, 1.0)
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _post(self, signal: str, batches: list[_Batch]) -> str | float:
        """POST ``batches`` once: ``"done"`` (accepted, or rejected and counted), else ``"retry"``, or the
        seconds the collector asked to wait (``Retry-After``)."""
        assert self._session is not None
        records = sum(batch.records for batch in batches)
        try:
            body = encoding.join(signal, [batch.body for batch in batches])
        except msgspec.DecodeError as exc:  # cannot be: each body was decoded when it came
            self._count(signal, "rejected", records)
            log.error(
                "OTLP export: %d %s records dropped, their requests could not be joined: %s", records, signal, exc
            )
            return "done"
        try:
            async with self._session.post(self.endpoint + PATHS[signal], data=body) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After", "")
                detail = (await response.text(errors="replace"))[:200] if status >= 300 else ""
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.retries[signal] += 1
            self._warn(f"cannot reach it ({type(exc).__name__}: {exc}); retrying")
            return "retry"
        if 200 <= status < 300:
            self._count(signal, "exported", records)
            return "done"
        if status in RETRYABLE or status >= 500:
            self.retries[signal] += 1
            self._warn(f"it answered {status} ({detail}); retrying")
            with contextlib.suppress(ValueError):
                return min(max(float(retry_after), 0.0), MAX_RETRY_AFTER_S)
            return "retry"
        self._count(signal, "rejected", records)
        self._warn(f"it refused {records} {signal} records with {status} ({detail}); they are dropped")
        return "done"

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_INTERVAL_S:
            self._last_warning = now
            log.warning("OTLP export to %s: %s (iii_observability_export_* metrics count them)", self.endpoint, what)

    def _count(self, signal: str, outcome: str, records: int) -> None:
        key = (signal, outcome)
        self.counts[key] = self.counts.get(key, 0) + records

    # --- metrics ---------------------------------------------------------------------------------------------

    def metrics(self) -> Iterator[MetricSample]:
        for signal in SIGNALS:
            for outcome in ("exported", *DROP_OUTCOMES):
                yield MetricSample(
                    "observability_export_records_total",
                    self.counts.get((signal, outcome), 0),
                    {"signal": signal, "outcome": outcome},
                    "Records forwarded to the OTLP collector (exported), or dropped (queue_full, rejected, shutdown)",
                    "counter",
                )
            yield MetricSample(
                "observability_export_retries_total",
                self.retries[signal],
                {"signal": signal},
                "POSTs to the OTLP collector that failed and were retried",
                "counter",
            )
        yield MetricSample("observability_export_queued_records", self.queued_records, {}, "Records waiting to go")
        yield MetricSample("observability_export_queued_bytes", self.queued_bytes, {}, "Bytes waiting to go")
