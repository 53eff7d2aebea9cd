"""A worker's telemetry settings: whether it records spans and logs, how often it sends them, and the names its
records carry (the OTLP resource and instrumentation scope)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from iii._version import __version__
from iii.protocol import otlp

if TYPE_CHECKING:
    from iii.sdk.options import InitOptions

SCOPE: Final = otlp.Scope("iii-py", __version__)
"""The instrumentation scope of every record the SDK sends."""
_FALSE: Final = frozenset(("false", "0", "no", "off"))


@dataclass(frozen=True)
class TelemetrySettings:
    """What the worker records and how it is named (:meth:`of` says where each comes from)."""

    enabled: bool = True
    logs_enabled: bool = True
    service_name: str = "iii-py"
    service_version: str = "unknown"
    service_namespace: str | None = None
    service_instance_id: str = ""
    flush_interval_s: float = 0.1

    @classmethod
    def of(cls, options: InitOptions) -> TelemetrySettings:
        """The settings of a worker: ``options.otel``'s fields (``enabled``, ``logs_enabled``, ``service_name``,
        ``service_version``, ``service_namespace``, ``service_instance_id``, ``spans_flush_interval_ms``), else
        the environment (``OTEL_ENABLED``, ``OTEL_SERVICE_NAME``, ``SERVICE_VERSION``, ``SERVICE_NAMESPACE``,
        ``SERVICE_INSTANCE_ID``, ``OTEL_SPANS_FLUSH_INTERVAL_MS``), else the defaults."""
        config = options.otel

        def setting(name: str) -> Any:
            if isinstance(config, Mapping):
                return config.get(name)
            return getattr(config, name, None)

        enabled = setting("enabled")
        if enabled is None:
            enabled = os.environ.get("OTEL_ENABLED", "").strip().lower() not in _FALSE
        logs_enabled = setting("logs_enabled")
        interval_ms = setting("spans_flush_interval_ms")
        if interval_ms is None:
            try:
                interval_ms = int(os.environ.get("OTEL_SPANS_FLUSH_INTERVAL_MS", "100"))
            except ValueError:
                interval_ms = 100
        return cls(
            enabled=bool(enabled),
            logs_enabled=True if logs_enabled is None else bool(logs_enabled),
            service_name=setting("service_name") or os.environ.get("OTEL_SERVICE_NAME") or options.resolved_name(),
            service_version=setting("service_version") or os.environ.get("SERVICE_VERSION") or "unknown",
            service_namespace=setting("service_namespace") or os.environ.get("SERVICE_NAMESPACE") or None,
            service_instance_id=setting("service_instance_id")
            or os.environ.get("SERVICE_INSTANCE_ID")
            or str(uuid.uuid4()),
            flush_interval_s=max(0, int(interval_ms)) / 1000,
        )

    def resource(self) -> otlp.Attributes:
        """The OTLP resource attributes of the worker's records: the service's names and the SDK's."""
        entries: dict[str, Any] = {
            "service.name": self.service_name,
            "service.version": self.service_version,
            "service.instance.id": self.service_instance_id,
            "telemetry.sdk.name": "iii-py",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.version": __version__,
        }
        if self.service_namespace:
            entries["service.namespace"] = self.service_namespace
        return otlp.attributes(entries)
