"""The state module's settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Backend = Literal["sqlite", "redis"]


@dataclass(frozen=True, slots=True)
class StateSettings:
    """Where state lives and what it accepts.

    ``backend`` None picks Redis when ``redis_url`` is set, else SQLite in ``data_dir``.
    """

    data_dir: Path
    """The SQLite backend's file is ``data_dir / "state.sqlite3"`` (created with the directory if missing)."""
    redis_url: str | None = None
    backend: Backend | None = None
    max_value_bytes: int = 1024 * 1024
    """A value whose JSON encoding is longer is refused (``VALUE_TOO_LARGE``), by set and by update."""
    max_name_bytes: int = 512
    """A scope or key longer than this (UTF-8) is refused (``invalid_scope`` / ``invalid_key``)."""
    triggers_enabled: bool = True
    """False: writes fire no ``state`` triggers (the reference's ``triggers_enabled``)."""
    trigger_max_waiting: int = 10_000
    """Changes that may wait for one bound function (the one in flight included); past it a change is dropped for
    that function, counted in ``iii_state_trigger_calls_total{outcome="dropped"}`` and logged."""
    sqlite_synchronous: Literal["full", "normal"] = "full"
    """SQLite's ``synchronous`` in WAL mode; see :mod:`iii.modules.state.sqlite_store` for what each keeps."""
    sqlite_batch_max_writes: int = 1024
    """At most this many writes are committed in one transaction (group commit)."""
    redis_key_prefix: str = "iii:state:"
    stats_interval_s: float = 5.0
    """How often the key counts shown by ``metrics()`` and ``snapshot()`` are read from the backend."""
    snapshot_recent_keys: int = 5
    """How many recently written keys ``snapshot()`` shows per scope."""

    def __post_init__(self) -> None:
        if self.backend not in (None, "sqlite", "redis"):
            raise ValueError(f"state backend must be 'sqlite' or 'redis', not {self.backend!r}")
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("the redis state backend needs a redis_url")
        if self.sqlite_synchronous not in ("full", "normal"):
            raise ValueError(f"sqlite_synchronous must be 'full' or 'normal', not {self.sqlite_synchronous!r}")
        for name in ("max_value_bytes", "max_name_bytes", "sqlite_batch_max_writes", "trigger_max_waiting"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.stats_interval_s <= 0:
            raise ValueError("stats_interval_s must be positive")

    @property
    def resolved_backend(self) -> Backend:
        """The backend in use: ``backend``, or Redis when a URL is given, else SQLite."""
        if self.backend is not None:
            return self.backend
        return "redis" if self.redis_url else "sqlite"
