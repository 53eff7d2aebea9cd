"""The queue module's settings: the ``[queue]`` table, with the named queues in ``[queue.queue_configs.NAME]``."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Literal

DEFAULT_QUEUE: Final = "default"


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """One queue's delivery settings (the reference's fields and defaults)."""

    max_retries: int = 3
    """Failed deliveries a message may have; the next failure sends it to the dead letters."""
    concurrency: int = 10
    """Deliveries of this queue in flight at once (FIFO: of different groups)."""
    type: Literal["standard", "fifo"] = "standard"
    message_group_field: str | None = None
    """FIFO: the payload field whose value is the message's group (required for ``fifo``)."""
    backoff_ms: int = 1000
    """A failed message waits ``backoff_ms * 2 ** (attempt - 1)`` before its next delivery."""

    def __post_init__(self) -> None:
        if self.type not in ("standard", "fifo"):
            raise ValueError(f"type must be 'standard' or 'fifo', not {self.type!r}")
        if self.type == "fifo" and not self.message_group_field:
            raise ValueError("a fifo queue needs a message_group_field")
        for name in ("max_retries", "backoff_ms"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0")
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError("concurrency must be an integer >= 1")

    @property
    def fifo(self) -> bool:
        return self.type == "fifo"

    def backoff_for(self, attempt: int) -> int:
        """The wait (ms) after the ``attempt``-th failed delivery (1 for the first)."""
        return int(self.backoff_ms * 2 ** max(attempt - 1, 0))

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def parse(cls, name: str, table: Any) -> QueueConfig:
        """A queue's settings from its table; ``ValueError`` naming the queue for a bad one."""
        if not isinstance(table, Mapping):
            raise ValueError(f"queue {name!r}: its settings must be a table")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(
                f"queue {name!r}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        try:
            return cls(**table)
        except (TypeError, ValueError) as error:
            raise ValueError(f"queue {name!r}: {error}") from None


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """Where the queues live and how they deliver."""

    data_dir: Path
    """The SQLite backend's file is ``data_dir / "queue.sqlite3"``."""
    redis_url: str | None = None
    backend: Literal["sqlite", "redis"] | None = None
    """None: Redis Streams when ``redis_url`` is set (engines sharing it share the queues), else SQLite in
    ``data_dir`` (this engine's own)."""
    redis_prefix: str = "iii:queue:"
    consumer: str | None = None
    """This engine's name among the engines sharing the queues on Redis; it takes back its own deliveries when it
    restarts. Default: the host name and the data directory."""
    queue_configs: Mapping[str, Any] = field(default_factory=dict)
    """Named queues: name -> :class:`QueueConfig` fields. ``default`` always exists (with the defaults unless
    configured here)."""
    sqlite_synchronous: Literal["full", "normal"] = "full"
    """SQLite's ``synchronous`` in WAL mode; see :mod:`iii.modules.sqlite_writer` for what each keeps."""
    sqlite_batch_max_writes: int = 1024
    """At most this many writes are committed in one transaction (group commit)."""
    poll_interval_ms: int = 100
    """How often a queue with nothing to deliver looks again (for retries whose backoff has run out)."""
    lease_s: float = 3600.0
    """How long a delivery may hold a message before another may take it (longer than any invocation)."""
    stats_interval_s: float = 2.0
    """How often the depths shown by ``metrics()`` and ``snapshot()`` are read from the backend."""

    def __post_init__(self) -> None:
        if self.backend not in (None, "sqlite", "redis"):
            raise ValueError(f"queue backend must be 'sqlite' or 'redis', not {self.backend!r}")
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("the redis queue backend needs a redis_url")
        if self.sqlite_synchronous not in ("full", "normal"):
            raise ValueError(f"queue sqlite_synchronous must be 'full' or 'normal', not {self.sqlite_synchronous!r}")
        if not isinstance(self.queue_configs, Mapping):
            raise ValueError("queue_configs must be a table of queues")
        self.named_queues()  # a bad queue is refused at start
        if self.poll_interval_ms < 1 or self.lease_s <= 0 or self.sqlite_batch_max_writes < 1:
            raise ValueError("queue poll_interval_ms, lease_s and sqlite_batch_max_writes must be positive")

    @property
    def uses_redis(self) -> bool:
        return self.backend == "redis" or (self.backend is None and bool(self.redis_url))

    def consumer_name(self) -> str:
        """:attr:`consumer`, or this host's name and the data directory."""
        return self.consumer or f"{socket.gethostname()}:{self.data_dir}"

    def named_queues(self) -> dict[str, QueueConfig]:
        """The named queues, ``default`` among them."""
        queues = {name: QueueConfig.parse(name, table) for name, table in self.queue_configs.items()}
        queues.setdefault(DEFAULT_QUEUE, QueueConfig())
        return queues
