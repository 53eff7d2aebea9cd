"""The streams module's settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Backend = Literal["sqlite", "redis"]


@dataclass(frozen=True, slots=True)
class StreamsSettings:
    """Where stream items live and what they may be.

    ``backend`` None picks Redis when ``redis_url`` is set, else SQLite in ``data_dir``.
    """

    data_dir: Path
    """The SQLite backend's file is ``data_dir / "streams.sqlite3"`` (created with the directory if missing)."""
    redis_url: str | None = None
    backend: Backend | None = None
    max_value_bytes: int = 1024 * 1024
    """An item whose JSON encoding is longer is refused (``VALUE_TOO_LARGE``), by set and by update."""
    max_name_bytes: int = 256
    """A stream name, group id or item id longer than this (UTF-8) is refused (``invalid_name``)."""
    triggers_enabled: bool = True
    """False: changes and events fire no ``stream`` triggers."""
    trigger_max_waiting: int = 10_000
    """Changes that may wait for one bound function (the one in flight included); past it a change is dropped for
    that function, counted in ``iii_stream_trigger_calls_total{outcome="dropped"}`` and logged."""
    sqlite_synchronous: Literal["full", "normal"] = "full"
    """SQLite's ``synchronous`` in WAL mode (as the state module's)."""
    sqlite_batch_max_writes: int = 1024
    """At most this many writes are committed in one transaction (group commit)."""
    redis_key_prefix: str = "iii:streams:"
    """Items live under this prefix in Redis, and changes are published on ``<prefix>changes`` for the other
    engines' subscribers."""
    host: str = "127.0.0.1"
    """Where the subscription port listens (the engine's ``--stream-host``)."""
    port: int = -1
    """The subscription port (the engine's ``--stream-port``, 3112 by default there): 0 any free port, -1 none."""
    auth_function: str | None = None
    """A function that admits each subscriber before its upgrade (``{"context": ...}``), or refuses it (401)."""
    auth_timeout_s: float = 10.0
    """An auth function that has not answered this long leaves the client refused with 503."""
    subscriber_queue_messages: int = 1024
    """Messages one subscriber may have waiting to be sent; one more drops it (close 1013)."""
    subscriber_queue_bytes: int = 8 * 1024 * 1024
    """Bytes one subscriber may have waiting to be sent (its syncs not counted); more drops it (close 1013)."""
    subscriber_max_message_bytes: int = 64 * 1024
    """The largest message a subscriber may send (a join or a leave); a longer one closes its socket (1009)."""
    subscriber_heartbeat_s: float = 20.0
    """A subscriber is pinged when this long passed since its last ping, and dropped (close 1006, a ``stream:leave``
    for each of its subscriptions) when no pong comes within half of it: a client gone without a close (a laptop
    closed, a network lost) is noticed in seconds, not when TCP gives up. 0: never pinged."""
    console_max_groups: int = 500
    """The console lists at most this many groups (of all streams), with the number left out."""
    console_max_items: int = 100
    """The console shows at most this many items of a group (the first by id), with the group's size."""
    console_max_value_bytes: int = 512
    """The console shows at most this much of an item's JSON."""

    def __post_init__(self) -> None:
        if self.backend not in (None, "sqlite", "redis"):
            raise ValueError(f"streams backend must be 'sqlite' or 'redis', not {self.backend!r}")
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("the redis streams backend needs a redis_url")
        if self.sqlite_synchronous not in ("full", "normal"):
            raise ValueError(f"sqlite_synchronous must be 'full' or 'normal', not {self.sqlite_synchronous!r}")
        if not -1 <= self.port <= 65535:
            raise ValueError(f"port must be -1..65535, not {self.port}")
        if self.subscriber_heartbeat_s < 0:
            raise ValueError(f"subscriber_heartbeat_s must be 0 (off) or more, not {self.subscriber_heartbeat_s}")
        if self.auth_timeout_s <= 0:
            raise ValueError(f"auth_timeout_s must be positive, not {self.auth_timeout_s}")
        for name in (
            "max_value_bytes",
            "trigger_max_waiting",
            "max_name_bytes",
            "sqlite_batch_max_writes",
            "subscriber_queue_messages",
            "subscriber_queue_bytes",
            "subscriber_max_message_bytes",
            "console_max_groups",
            "console_max_items",
            "console_max_value_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @property
    def resolved_backend(self) -> Backend:
        """The backend in use: ``backend``, or Redis when a URL is given, else SQLite."""
        if self.backend is not None:
            return self.backend
        return "redis" if self.redis_url else "sqlite"
