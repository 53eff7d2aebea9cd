"""Every setting, limit and timeout of the engine, in one object, with units in the names.

Each field can be set by a command-line flag (``--channel-ttl-s 60``) and by an environment variable
(``III_ENGINE_CHANNEL_TTL_S=60``); a flag wins over the environment, which wins over the default.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

ENV_PREFIX: Final = "III_ENGINE_"
MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """The engine's configuration. All sizes are bytes, all durations seconds."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=49134, metadata={"help": "port of the worker and channel sockets (0 = any)"})
    token: str | None = field(
        default=None,
        metadata={
            "help": "shared bearer token every worker and channel handshake must carry",
            "secret": True,
        },
    )
    max_message_bytes: int = field(
        default=64 * MIB, metadata={"help": "largest message accepted on any socket (fragments included)"}
    )
    invocation_timeout_s: float = field(
        default=300.0, metadata={"help": "engine-side limit on how long a call may wait for its result"}
    )
    channel_default_buffer_frames: int = field(
        default=64, metadata={"help": "frames a channel buffers when the creator gives no buffer_size"}
    )
    channel_max_buffer_frames: int = field(default=1024, metadata={"help": "largest buffer_size a channel may ask for"})
    channel_buffer_bytes: int = field(
        default=16 * MIB, metadata={"help": "bytes a channel buffers before the writer is paused"}
    )
    channel_ttl_s: float = field(
        default=300.0, metadata={"help": "how long a channel end may stay unconnected before it expires"}
    )
    worker_max_pending_calls: int = field(
        default=10_000, metadata={"help": "calls one worker may have waiting for results (limit_exceeded beyond)"}
    )
    worker_max_channels: int = field(
        default=10_000, metadata={"help": "live channels one worker may have created (limit_exceeded beyond)"}
    )
    worker_ping_interval_s: float = field(
        default=20.0, metadata={"help": "ping a worker socket that has been silent this long (0 = never)"}
    )
    worker_ping_timeout_s: float = field(
        default=20.0, metadata={"help": "drop a worker that stays silent this long after a ping"}
    )
    http_host: str = field(default="127.0.0.1", metadata={"help": "address of the HTTP trigger server"})
    http_port: int = field(
        default=3111, metadata={"help": "port of the HTTP trigger server (0 = any free port, -1 = no HTTP server)"}
    )
    http_timeout_s: float = field(
        default=30.0,
        metadata={
            "help": "time a function bound to an HTTP route has to start its response once it has the whole "
            "request, and longest pause of a request body (504)"
        },
    )
    http_max_body_bytes: int = field(
        default=4 * 1024 * MIB,
        metadata={"help": "largest HTTP request body (413); JSON bodies are also kept under half of max_message_bytes"},
    )
    http_max_header_bytes: int = field(
        default=8190, metadata={"help": "longest HTTP request line or header field (431/400 beyond)"}
    )
    http_max_concurrent_requests: int = field(
        default=1024, metadata={"help": "HTTP requests served at once; later ones wait for a slot"}
    )
    rbac_host: str = field(
        default="127.0.0.1", metadata={"help": "address of the RBAC worker listener (the rbac module's port)"}
    )
    rbac_port: int | None = field(
        default=None,
        metadata={
            "help": "port of the RBAC worker listener, where the [rbac] table's auth function admits workers "
            "(0 = any free port; unset = no listener)"
        },
    )
    stream_host: str = field(
        default="127.0.0.1", metadata={"help": "address of the stream module's subscription port (WebSocket clients)"}
    )
    stream_port: int = field(
        default=3112,
        metadata={
            "help": "port where clients subscribe to streams, when the stream module runs (0 = any free port, "
            "-1 = none)"
        },
    )
    memory_trim_interval_s: float = field(
        default=10.0, metadata={"help": "how often freed memory is handed back to the system (0 = never)"}
    )
    handshake_timeout_s: float = field(
        default=10.0, metadata={"help": "time a client has to complete the WebSocket handshake"}
    )
    shutdown_grace_s: float = field(
        default=5.0, metadata={"help": "time given to sockets to flush and close on shutdown"}
    )
    data_dir: str = field(
        default="",
        metadata={
            "help": "directory where the modules keep their files (state's SQLite database, ...); "
            "empty: $XDG_DATA_HOME/iii, else ~/.local/share/iii"
        },
    )
    redis_url: str | None = field(
        default=None,
        metadata={
            "help": "redis:// URL; when set, this engine joins the cluster of the engines that share it (calls and "
            "channels cross engines), and the modules keep their data there unless a module's own backend setting "
            "says otherwise",
            "secret": True,
        },
    )
    advertise_url: str | None = field(
        default=None,
        metadata={
            "help": "with redis_url: the ws:// address the other engines of the cluster reach this one at "
            "(default: ws://host:port, with the machine's name for a wildcard host)"
        },
    )
    otlp_endpoint: str | None = field(
        default=None,
        metadata={
            "help": "base URL of an OTLP/HTTP collector (http://host:4318): the observability module forwards every "
            "log, span and metric it keeps there (POST /v1/logs, /v1/traces, /v1/metrics, JSON); overrides "
            "[observability] otlp_endpoint",
            "table": "observability",
        },
    )
    otlp_headers: str | None = field(
        default=None,
        metadata={
            "help": "headers for the OTLP collector, key=value pairs separated by commas (values percent-encoded, "
            "as OTEL_EXPORTER_OTLP_HEADERS); overrides [observability] otlp_headers",
            "secret": True,
            "table": "observability",
        },
    )
    modules: str = field(
        default="state,stream,pubsub,cron,queue,http_functions,observability",
        metadata={
            "help": "the modules to run, comma-separated (empty: none): state, stream, pubsub, cron, queue, "
            "http_functions, observability"
        },
    )
    module_settings: Mapping[str, Mapping[str, Any]] = field(
        default_factory=dict,
        metadata={
            "help": "per-module settings, from the TOML file's tables ([state], [stream], [pubsub], [cron], "
            "[queue], [http_functions], [observability], [rbac])",
            "file_only": True,
        },
    )
    log_level: str = field(default="INFO", metadata={"help": "DEBUG, INFO, WARNING or ERROR"})
    log_format: str = field(default="kv", metadata={"help": "kv (key=value text) or json (one object per line)"})

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be 0..65535, got {self.port}")
        if not -1 <= self.http_port <= 65535:
            problems.append(f"http_port must be -1..65535, got {self.http_port}")
        if not -1 <= self.stream_port <= 65535:
            problems.append(f"stream_port must be -1..65535, got {self.stream_port}")
        if self.rbac_port is not None and not 0 <= self.rbac_port <= 65535:
            problems.append(f"rbac_port must be 0..65535, got {self.rbac_port}")
        for name in (
            "max_message_bytes",
            "channel_buffer_bytes",
            "channel_default_buffer_frames",
            "http_max_body_bytes",
            "http_max_header_bytes",
            "http_max_concurrent_requests",
            "worker_max_pending_calls",
            "worker_max_channels",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.channel_max_buffer_frames < self.channel_default_buffer_frames:
            problems.append("channel_max_buffer_frames must be >= channel_default_buffer_frames")
        for name in (
            "invocation_timeout_s",
            "channel_ttl_s",
            "handshake_timeout_s",
            "worker_ping_timeout_s",
            "http_timeout_s",
        ):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.advertise_url is not None and not self.advertise_url.startswith(("ws://", "wss://")):
            problems.append(f"advertise_url must be a ws:// or wss:// URL, got {self.advertise_url!r}")
        if self.log_format not in ("kv", "json"):
            problems.append(f"log_format must be kv or json, got {self.log_format!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        if self.memory_trim_interval_s < 0:
            problems.append(f"memory_trim_interval_s must be >= 0, got {self.memory_trim_interval_s}")
        if self.worker_ping_interval_s < 0:
            problems.append(f"worker_ping_interval_s must be >= 0, got {self.worker_ping_interval_s}")
        from iii.engine.modules import CATALOG, ENGINE_RUN, HTTP, RBAC  # the catalog imports no module code

        listable = [name for name in CATALOG if name not in ENGINE_RUN]
        for name in self.module_names:
            if name == HTTP:
                problems.append("modules: http is not listed here: it runs unless http_port is -1")
            elif name == RBAC:
                problems.append("modules: rbac is not listed here: it runs when rbac_port is set")
            elif name not in CATALOG:
                problems.append(f"modules: unknown module {name!r} (known: {', '.join(listable)})")
        tables = [name for name in CATALOG if CATALOG[name].has_table]
        for name in self.module_settings:
            if name not in CATALOG:
                problems.append(f"unknown module settings table [{name}] (known: {', '.join(tables)})")
            elif not CATALOG[name].has_table:
                problems.append(f"[{name}]: its settings are the engine's own ({name}_* settings, --{name}-* flags)")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def module_names(self) -> list[str]:
        """The modules to run, in order."""
        return [name.strip() for name in self.modules.split(",") if name.strip()]

    @property
    def data_path(self) -> Path:
        """Where the modules keep their files (the setting, or the per-user default)."""
        if self.data_dir:
            return Path(self.data_dir).expanduser()
        base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        return Path(base) / "iii"

    @classmethod
    def from_sources(
        cls,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        file_values: Mapping[str, Any] | None = None,
    ) -> EngineConfig:
        """Build a config from a file's values, the environment (``III_ENGINE_<FIELD>``) and overrides.

        ``overrides`` values of ``None`` are ignored, so unset command-line flags fall through.
        Raises ``ValueError`` naming the variable when an environment value cannot be converted.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = dict(file_values or {})
        for spec in fields(cls):
            if spec.metadata.get("file_only"):
                continue
            env_name = ENV_PREFIX + spec.name.upper()
            if env_name in environ:
                try:
                    values[spec.name] = convert(spec, environ[env_name])
                except ValueError as exc:
                    raise ValueError(f"{env_name}: {exc}") from None
        for name, value in (overrides or {}).items():
            if value is not None:
                values[name] = value
        return cls(**values)

    def changed_settings(self) -> str:
        """The settings that differ from the defaults, as ``name=value`` pairs; secrets only as ``<set>``."""
        pairs = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
            if value != default:
                pairs.append(f"{spec.name}={'<set>' if spec.metadata.get('secret') else value}")
        return " ".join(pairs) or "all defaults"

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def field_type(spec: dataclasses.Field[Any]) -> type:
    """The Python type used to parse a field's text value (``str | None`` parses as ``str``)."""
    text = str(spec.type)
    for candidate in (int, float, str):
        if text.startswith(candidate.__name__):
            return candidate
    raise TypeError(f"unsupported config field type {spec.type!r}")


def convert(spec: dataclasses.Field[Any], text: str) -> Any:
    """Parse the text of an environment variable or flag into the field's type."""
    kind = field_type(spec)
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"expected {kind.__name__}, got {text!r}") from None


def load_toml(path: str) -> dict[str, Any]:
    """The settings in a TOML file, by field name (``channel_ttl_s`` or ``channel-ttl-s``), type-checked.

    Raises ``ValueError`` naming the file and the key for unknown keys, wrong types or invalid TOML.
    """
    import tomllib

    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    specs = {spec.name: spec for spec in fields(EngineConfig) if not spec.metadata.get("file_only")}
    values: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if isinstance(value, dict):  # a module's table: [state], [pubsub], ...
            tables[name] = {inner.replace("-", "_"): setting for inner, setting in value.items()}
            continue
        spec = specs.get(name)
        if spec is None:
            raise ValueError(f"{path}: unknown setting {key!r} (see iii engine --help)")
        if "table" in spec.metadata:  # a module's setting that a flag can also give: its place in the file is there
            raise ValueError(f"{path}: {key} goes in the [{spec.metadata['table']}] table")
        kind = field_type(spec)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{path}: {key} must be a {kind.__name__}, got {type(value).__name__}")
        values[name] = value
    if tables:
        values["module_settings"] = tables
    return values
