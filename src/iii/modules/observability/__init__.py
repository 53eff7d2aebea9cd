"""Observability: the workers' logs, spans and metrics, kept in bounded memory and served by the reference's
functions (``engine::log::*``, ``engine::logs::*``, ``engine::traces::*``, ``engine::metrics::list``,
``engine::health::check``)."""

from .module import ObservabilityModule
from .settings import ObservabilitySettings

__all__ = ["ObservabilityModule", "ObservabilitySettings"]
