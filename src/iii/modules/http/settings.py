"""The http module's settings (the engine fills them from its ``--http-*`` flags)."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Where the HTTP server listens and what it accepts. All sizes are bytes, all durations seconds."""

    host: str = "127.0.0.1"
    port: int = 3111
    """0: any free port."""
    timeout_s: float = 30.0
    """How long a function has to start its response once it has the whole request, and the longest pause of
    a request body (504 beyond either); also how long each middleware has to answer."""
    max_body_bytes: int = 4 * 1024 * MIB
    """The largest request body (413 beyond)."""
    max_json_bytes: int = 32 * MIB
    """The largest JSON request body, which goes into the call's payload (413 beyond); the engine makes it half
    its message limit, so the call always fits."""
    max_header_bytes: int = 8190
    """The longest request line or header field."""
    max_concurrent_requests: int = 1024
    """Requests served at once; later ones wait for a slot."""
    shutdown_grace_s: float = 5.0
    """How long requests in progress and open connections get to finish when the module stops."""

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be 0..65535, got {self.port}")
        if self.timeout_s <= 0:
            problems.append(f"timeout_s must be positive, got {self.timeout_s}")
        if self.shutdown_grace_s < 0:
            problems.append(f"shutdown_grace_s must be >= 0, got {self.shutdown_grace_s}")
        for name in ("max_body_bytes", "max_json_bytes", "max_header_bytes", "max_concurrent_requests"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if problems:
            raise ValueError("; ".join(problems))
