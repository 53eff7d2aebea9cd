"""Options of a worker connection, named as in the official Python SDK where they exist there."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from iii.errors import UsageError

DEFAULT_ENGINE_URL: Final = "ws://127.0.0.1:49134"


@dataclass
class ReconnectionConfig:
    """Exponential backoff between reconnection attempts (the official SDKs' defaults).

    ``max_retries`` of -1 retries forever once the worker has connected at least once.
    """

    initial_delay_ms: int = 1000
    max_delay_ms: int = 30_000
    backoff_multiplier: float = 2.0
    jitter_factor: float = 0.3
    max_retries: int = -1

    def delay_s(self, attempt: int) -> float:
        """The pause before reconnection attempt ``attempt`` (0-based), with jitter."""
        base = min(self.initial_delay_ms * self.backoff_multiplier**attempt, self.max_delay_ms)
        jitter = base * self.jitter_factor * (2 * random.random() - 1)
        return max(0.0, base + jitter) / 1000


@dataclass
class InitOptions:
    """How a worker connects and behaves.

    ``token`` (or ``III_TOKEN``) is sent as ``Authorization: Bearer <token>`` on the worker socket and on
    every channel socket. ``connect_timeout_s`` bounds the first connection: :func:`register_worker` raises
    :class:`~iii.errors.EngineUnavailableError` when the engine cannot be reached within it. A connection
    that goes silent (no traffic for ``ping_idle_s``, then no answer to a ping for ``ping_timeout_s``) is
    dropped and reconnected, and the calls waiting on it fail, instead of hanging on a dead network.

    ``otel`` (a mapping, or the official SDK's ``OtelConfig``) sets the worker's telemetry
    (:mod:`iii.sdk.telemetry`): ``{"enabled": False}`` (or ``OTEL_ENABLED=false``) sends no spans nor logs;
    ``logs_enabled``, ``service_name`` (``OTEL_SERVICE_NAME``; default: the worker's name), ``service_version``,
    ``service_namespace``, ``service_instance_id``, ``spans_flush_interval_ms`` as in the official SDK; its
    other fields are ignored. Official-SDK options this SDK does not use (``telemetry``,
    ``enable_metrics_reporting``) are accepted and ignored.
    """

    worker_name: str | None = None
    worker_description: str | None = None
    namespace: str | None = None
    invocation_timeout_ms: int = 30_000
    headers: dict[str, str] | None = None
    token: str | None = None
    reconnection_config: ReconnectionConfig = field(default_factory=ReconnectionConfig)
    connect_timeout_s: float = 10.0
    ping_idle_s: float = 20.0
    """Ping the engine after this long without traffic (0 = never)."""
    ping_timeout_s: float = 20.0
    """A ping unanswered this long means the connection is dead: the worker reconnects. (The idle time is
    raised to this if it is shorter.)"""
    flush_timeout_s: float = 30.0
    """At :meth:`~iii.III.shutdown` and when the interpreter exits, how long streams still being written (data,
    a close) may take to reach the engine; what could not be delivered by then is reported on stderr."""
    enable_metrics_reporting: bool = True
    otel: Any = None
    telemetry: Any = None

    def resolved_name(self) -> str:
        return self.worker_name or os.environ.get("III_WORKER_NAME") or f"{socket.gethostname()}:{os.getpid()}"

    def handshake_headers(self) -> dict[str, str]:
        headers = dict(self.headers or {})
        token = self.token or os.environ.get("III_TOKEN")
        if token and not any(name.lower() == "authorization" for name in headers):
            headers["Authorization"] = f"Bearer {token}"
        return headers


_SCHEMES: Final = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}
"""Accepted URL schemes and the WebSocket scheme each means (``http`` as ``ws``, as the Node SDK's ``ws`` does)."""


def resolve_url(url: str | None) -> str:
    """The engine address: the argument, else ``III_URL``, else ``ws://127.0.0.1:49134``.

    ``ws://`` and ``wss://`` are taken as they are; ``http://`` and ``https://`` mean ``ws://`` and ``wss://``
    (as in the official Node SDK). Anything else (no scheme, another scheme, no host, a port that is not a
    number) raises :class:`~iii.errors.UsageError` naming the problem, at once, instead of failing to
    connect until the connect timeout.
    """
    source = "the engine URL"
    if not url and os.environ.get("III_URL"):
        url, source = os.environ["III_URL"], "III_URL"
    if not url:
        return DEFAULT_ENGINE_URL
    return _checked_url(url, source)


def resolve_urls(urls: str | Sequence[str] | None) -> list[str]:
    """The engine addresses a worker may use, in order: a list, or one string with addresses separated by
    commas (``III_URL`` too), each checked as :func:`resolve_url` does; the default address when none is given."""
    source = "the engine URL"
    if not urls and os.environ.get("III_URL"):
        urls, source = os.environ["III_URL"], "III_URL"
    if not urls:
        return [DEFAULT_ENGINE_URL]
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    resolved = [_checked_url(item, source) for item in items if item.strip()]
    if not resolved:
        raise UsageError(f"{source} names no engine address: {urls!r}")
    return resolved


def _checked_url(url: str, source: str) -> str:
    parts = urlsplit(url.strip())
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        hint = f"; did you mean 'ws://{url.strip()}'?" if "://" not in url else ""
        raise UsageError(f"{source} must start with ws:// or wss:// (or http://, https://), got {url!r}{hint}")
    try:
        _ = parts.port  # parsing the port raises ValueError when it is not a number
    except ValueError:
        raise UsageError(f"{source} has a port that is not a number from 0 to 65535: {url!r}") from None
    if not parts.hostname:
        raise UsageError(f"{source} names no host: {url!r} (e.g. ws://127.0.0.1:49134)")
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))
