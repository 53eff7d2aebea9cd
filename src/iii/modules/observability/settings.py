"""The observability module's settings: the ``[observability]`` table."""

from __future__ import annotations

from dataclasses import dataclass


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

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1:
            raise ValueError("observability needs max_message_bytes >= 1")
        for name in ("logs", "spans", "metrics"):
            if getattr(self, f"{name}_max_count") < 1 or getattr(self, f"{name}_max_bytes") < 1:
                raise ValueError(f"observability needs {name}_max_count >= 1 and {name}_max_bytes >= 1")
