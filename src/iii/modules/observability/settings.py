"""The observability module's settings: the ``[observability]`` table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .export import check_endpoint, parse_headers


@dataclass(frozen=True, slots=True)
class ObservabilitySettings:
    """The ``[observability]`` table: how much each store keeps (the oldest go past either bound). A record's
    bytes are an estimate of the memory its Python objects hold (:func:`.store.record_size`), not the size of its
    JSON (a few times smaller)."""

    logs_max_count: int = 10_000
    logs_max_bytes: int = 8 * 1024 * 1024
    spans_max_count: int = 10_000
    spans_max_bytes: int = 16 * 1024 * 1024
    metrics_max_count: int = 10_000
    metrics_max_bytes: int = 8 * 1024 * 1024
    max_message_bytes: int = 16 * 1024 * 1024
    """A larger telemetry message is dropped undecoded (counted as ``too_large``): decoding runs on the engine's
    loop, and the SDKs' batches are far smaller."""
    otlp_endpoint: str | None = None
    """The base URL of an OTLP/HTTP collector every kept record is forwarded to (:mod:`.export`); the engine's
    ``--otlp-endpoint`` (``III_ENGINE_OTLP_ENDPOINT``) overrides it."""
    otlp_headers: str | None = None
    """Headers sent with every POST to the collector, ``key=value,key2=value2`` (values percent-encoded), as
    ``OTEL_EXPORTER_OTLP_HEADERS``; the engine's ``--otlp-headers`` overrides it."""
    otlp_timeout_s: float = 10.0
    """How long one POST to the collector may take before it is retried."""
    otlp_queue_max_records: int = 20_000
    otlp_queue_max_bytes: int = 16 * 1024 * 1024
    """The export queue's bounds (records, bytes of their bodies): past either the oldest batches go, counted."""
    persist: bool = False
    """Keep the records in ``data_dir`` too (``observability.sqlite3``, :mod:`.persistence`), bounded as the rings
    are, so that they survive a restart."""
    data_dir: Path | None = None
    """The engine's data directory (``--data-dir``)."""

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1:
            raise ValueError("observability needs max_message_bytes >= 1")
        for name in ("logs", "spans", "metrics"):
            if getattr(self, f"{name}_max_count") < 1 or getattr(self, f"{name}_max_bytes") < 1:
                raise ValueError(f"observability needs {name}_max_count >= 1 and {name}_max_bytes >= 1")
        if not isinstance(self.persist, bool):
            raise ValueError(f"observability needs persist = true or false, got {self.persist!r}")
        if self.persist and self.data_dir is None:
            raise ValueError("observability needs a data_dir to persist")
        if self.otlp_endpoint:
            check_endpoint(self.otlp_endpoint)
        parse_headers(self.otlp_headers)
        if self.otlp_timeout_s <= 0:
            raise ValueError(f"observability needs otlp_timeout_s > 0, got {self.otlp_timeout_s}")
        if self.otlp_queue_max_records < 1 or self.otlp_queue_max_bytes < 1:
            raise ValueError("observability needs otlp_queue_max_records >= 1 and otlp_queue_max_bytes >= 1")
