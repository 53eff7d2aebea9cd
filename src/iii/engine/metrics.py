"""The engine's metrics, in Prometheus' text format at ``GET /metrics``.

Events on the hot path only bump plain counters here (a dict increment, a bisect into fixed histogram
buckets: well under a microsecond per call); everything else is read from the engine's own tables when
Prometheus scrapes. prometheus_client writes the exposition format (see docs/DESIGN.md).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from iii.modules.api import MetricSample

if TYPE_CHECKING:
    from iii.engine.core import Core

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OK: Final = "ok"


class EngineMetrics(Collector):
    """Counters the core bumps, and the collector that reports them with the core's live tables."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.invocations: Counter[str] = Counter()
        """Finished calls by outcome: ``ok`` or the error code."""
        self.errors: Counter[str] = Counter()
        """Errors the engine answered, by code (malformed messages, refusals, limits)."""
        self.module_samples: Callable[[], Iterable[tuple[str, MetricSample]]] | None = None
        """The running modules' samples, with each module's name (set by the engine)."""
        self.cluster_gauges: Callable[[], Iterable[tuple[str, str, float]]] | None = None
        """The cluster's gauges as (name, help, value), when the engine is in one (set by the engine)."""
        self._latency_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._latency_sum = 0.0
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    def call_finished(self, outcome: str, seconds: float) -> None:
        self.invocations[outcome] += 1
        self._latency_counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self._latency_sum += seconds

    def render(self) -> bytes:
        """The exposition text of every metric."""
        return generate_latest(self._registry)

    def collect(self) -> Iterator[Metric]:
        core = self.core
        yield _gauge("iii_workers", "Connected workers", len(core.workers))
        yield _gauge(
            "iii_functions", "Functions registered by workers", sum(1 for e in core.functions.entries() if e.owner)
        )
        yield _gauge("iii_invocations_pending", "Calls waiting for their result", len(core.router))
        invocations = CounterMetricFamily("iii_invocations", "Finished calls by outcome", labels=["outcome"])
        for outcome, count in sorted(self.invocations.items()):
            invocations.add_metric([outcome], count)
        yield invocations
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), self._latency_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "iii_invocation_duration_seconds",
            "Time from dispatch to result, of calls to worker functions",
            buckets=buckets,
            sum_value=self._latency_sum,
        )
        channels = core.channels
        relayed_bytes, relayed_frames = channels.relayed()
        yield _gauge("iii_channels_open", "Live channels", len(channels))
        yield _counter("iii_channels_created", "Channels created", channels.created)
        yield _counter("iii_channel_bytes_relayed", "Bytes relayed through channels", relayed_bytes)
        yield _counter("iii_channel_frames_relayed", "Frames relayed through channels", relayed_frames)
        yield _counter(
            "iii_channel_backpressure_stalls", "Times a channel writer was held back by its reader", channels.stalls
        )
        observing = core.observing
        observers = GaugeMetricFamily("iii_observers", "Observers (observe.v1) by state", labels=["state"])
        states = Counter(observer.state for observer in observing.table)
        for state in ("pending", "active", "suspended"):
            observers.add_metric([state], states[state])
        yield observers
        activations = CounterMetricFamily(
            "iii_observer_activations", "Observer activations that ended, by outcome", labels=["outcome"]
        )
        for outcome, count in sorted(observing.activations.items()):
            activations.add_metric([outcome], count)
        yield activations
        drops = CounterMetricFamily("iii_observer_drops", "Observer activations dropped, by reason", labels=["reason"])
        for reason, count in sorted(observing.drops.items()):
            drops.add_metric([reason], count)
        yield drops
        errors = CounterMetricFamily("iii_errors", "Errors the engine answered, by code", labels=["code"])
        for code, count in sorted(self.errors.items()):
            errors.add_metric([code], count)
        yield errors
        if self.cluster_gauges is not None:
            for name, documentation, value in self.cluster_gauges():
                yield _gauge(name, documentation, value)
        if self.module_samples is not None:
            yield from _module_families(self.module_samples())


def _module_families(samples: Iterable[tuple[str, MetricSample]]) -> Iterator[Metric]:
    """The modules' samples as metric families: ``iii_<name>``, with a ``module`` label and the samples' own."""
    grouped: dict[str, list[tuple[str, MetricSample]]] = {}
    for module, sample in samples:
        grouped.setdefault(sample.name, []).append((module, sample))
    for name, members in sorted(grouped.items()):
        first = members[0][1]
        label_names = ["module", *sorted({label for _, sample in members for label in sample.labels})]
        family_type = CounterMetricFamily if first.kind == "counter" else GaugeMetricFamily
        family = family_type(f"iii_{name}", first.help or name, labels=label_names)
        for module, sample in members:
            values = [module, *(str(sample.labels.get(label, "")) for label in label_names[1:])]
            family.add_metric(values, sample.value)
        yield family


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)
