"""The backend choice the pub/sub and cron modules share: ``auto`` (Redis when a URL is set), ``local`` or
``redis``."""

from __future__ import annotations

from typing import Literal

Backend = Literal["auto", "local", "redis"]


def check_backend(module: str, backend: str, redis_url: str | None) -> None:
    """``ValueError`` for an unknown backend, or ``redis`` without a URL."""
    if backend not in ("auto", "local", "redis"):
        raise ValueError(f"{module} backend must be auto, local or redis, not {backend!r}")
    if backend == "redis" and not redis_url:
        raise ValueError(f"{module} backend redis needs a redis_url")


def uses_redis(backend: str, redis_url: str | None) -> bool:
    """Whether the module keeps its data on Redis: asked for, or ``auto`` with a URL."""
    return backend == "redis" or (backend == "auto" and bool(redis_url))
