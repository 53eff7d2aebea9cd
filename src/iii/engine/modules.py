"""The modules an engine runs: which exist, how each is built from the engine's config, started and stopped.

A module is built from its settings dataclass: the two settings every module shares (``data_dir``: where its
embedded backend keeps files; ``redis_url``: when set, its data lives in Redis) plus its own, taken from the
config file's table named after it (``[state]``, ``[stream]``, ``[pubsub]``, ``[cron]``, ``[queue]``,
``[http_functions]``, ``[observability]``, ``[rbac]``). The stream module's subscription port is the engine's
own setting (``--stream-host``, ``--stream-port``), as the http module's is.
Each module gets its own :class:`~iii.engine.module_host.InProcessHost` and nothing else of the engine.

The http module is the engine's other front door: it runs unless ``--http-port`` is -1 (it is not listed in
``--modules``), its settings are the engine's ``--http-*`` flags (:func:`http_settings`), and it stops first
when the engine stops, so that requests in progress are answered before the calls are stopped. The rbac module
(the RBAC worker listener) is the third: it runs when ``--rbac-port`` is set (not listed in ``--modules``
either), its address comes from the ``--rbac-*`` flags and the rest of its settings from its ``[rbac]`` table.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from iii.modules.api import ConsoleQueries, MetricSample, Module

if TYPE_CHECKING:
    from iii.engine.config import EngineConfig
    from iii.engine.core import Core
    from iii.engine.module_host import WorkerPorts

log = logging.getLogger("iii.engine.modules")


@dataclass(frozen=True, slots=True)
class ModuleSpec:
    """Where a module's class and its settings class live (imported only when the module runs)."""

    package: str
    module_class: str
    settings_class: str
    description: str
    from_engine: Callable[[EngineConfig], dict[str, Any]] | None = None
    """The module's settings that come from the engine's own settings, by the module's names (one setting, one
    place: its table in the config file is refused, or with :attr:`has_table`, these keys in it are)."""
    has_table: bool = True
    """Whether it takes settings from its table in the config file (the ones :attr:`from_engine` does not give)."""
    engine_overrides: Callable[[EngineConfig], dict[str, Any]] | None = None
    """Settings of its table that an engine setting (a flag, an environment variable) overrides when it is given:
    the module's names and the values given."""


HTTP: Final = "http"
RBAC: Final = "rbac"
ENGINE_RUN: Final = (HTTP, RBAC)
"""The modules the engine runs by its own flags (``--http-port``, ``--rbac-port``), not by ``--modules``."""


def http_settings(config: EngineConfig) -> dict[str, Any]:
    """The http module's settings, from the engine's ``--http-*`` flags (and the message limit: a JSON body goes
    into the call's payload, so it is kept under half of ``--max-message-bytes``)."""
    return {
        "host": config.http_host,
        "port": config.http_port,
        "timeout_s": config.http_timeout_s,
        "max_body_bytes": config.http_max_body_bytes,
        "max_json_bytes": config.max_message_bytes // 2,
        "max_header_bytes": config.http_max_header_bytes,
        "max_concurrent_requests": config.http_max_concurrent_requests,
        "shutdown_grace_s": config.shutdown_grace_s,
    }


def stream_settings(config: EngineConfig) -> dict[str, Any]:
    """The stream module's subscription port, from the engine's ``--stream-host`` and ``--stream-port``."""
    return {"host": config.stream_host, "port": config.stream_port}


def rbac_settings(config: EngineConfig) -> dict[str, Any]:
    """The rbac module's address, from the engine's ``--rbac-host`` and ``--rbac-port``."""
    return {"host": config.rbac_host, "port": config.rbac_port or 0}


def observability_overrides(config: EngineConfig) -> dict[str, Any]:
    """``--otlp-endpoint`` and ``--otlp-headers`` (or their environment variables), when given, over the
    ``[observability]`` table's ``otlp_endpoint`` and ``otlp_headers``."""
    given = {"otlp_endpoint": config.otlp_endpoint, "otlp_headers": config.otlp_headers}
    return {key: value for key, value in given.items() if value}


_START_HINTS: Final = {
    HTTP: " (set --http-port, -1 for none)",
    RBAC: " (set --rbac-port, 0 for any free port)",
    "stream": " (set --stream-port, -1 for none)",
}
"""Appended to the error of a module that cannot bind its address (an ``OSError``, as the engine's own)."""

CATALOG: Final[Mapping[str, ModuleSpec]] = {
    "state": ModuleSpec(
        "iii.modules.state", "StateModule", "StateSettings", "key-value state by scope (state::*, state triggers)"
    ),
    "stream": ModuleSpec(
        "iii.modules.streams",
        "StreamsModule",
        "StreamsSettings",
        "items by stream, group and id (stream::*, stream triggers), and clients' subscriptions to them",
        from_engine=stream_settings,
    ),
    "pubsub": ModuleSpec(
        "iii.modules.pubsub", "PubSubModule", "PubSubSettings", "topics (publish, subscribe triggers)"
    ),
    "cron": ModuleSpec("iii.modules.cron", "CronModule", "CronSettings", "scheduled calls (cron triggers)"),
    "queue": ModuleSpec(
        "iii.modules.queue",
        "QueueModule",
        "QueueSettings",
        "durable queues (enqueue action, durable topics, retries, FIFO groups, dead letters)",
    ),
    "http_functions": ModuleSpec(
        "iii.modules.http_functions",
        "HttpFunctionsModule",
        "HttpFunctionsSettings",
        "functions behind an HTTP endpoint (registered with an invocation), called by the engine",
    ),
    "observability": ModuleSpec(
        "iii.modules.observability",
        "ObservabilityModule",
        "ObservabilitySettings",
        "the workers' logs, spans and metrics, kept in bounded memory (engine::log::*, logs, traces, metrics), "
        "forwarded to an OTLP collector",
        engine_overrides=observability_overrides,
    ),
    HTTP: ModuleSpec(
        "iii.modules.http",
        "HttpModule",
        "HttpSettings",
        "HTTP requests call functions (http triggers)",
        from_engine=http_settings,
        has_table=False,
    ),
    RBAC: ModuleSpec(
        "iii.modules.rbac",
        "RbacModule",
        "RbacSettings",
        "the RBAC worker listener: a port where an auth function admits workers and a policy limits them",
        from_engine=rbac_settings,
    ),
}
"""Every module the engine can run, by name."""


def build(name: str, config: EngineConfig) -> Module:
    """The module ``name`` with its settings from ``config``; ``ValueError`` for a setting it does not have."""
    spec = CATALOG[name]
    package = importlib.import_module(spec.package)
    settings_class = getattr(package, spec.settings_class)
    known = {field.name for field in dataclasses.fields(settings_class)}
    own = dict(config.module_settings.get(name, {}))
    shared: dict[str, Any] = {"data_dir": config.data_path, "redis_url": config.redis_url}
    from_engine = spec.from_engine(config) if spec.from_engine is not None else {}
    duplicated = sorted(set(own) & set(from_engine))
    if duplicated:
        flags = ", ".join(f"--{name}-{key.replace('_', '-')}" for key in duplicated)
        raise ValueError(f"[{name}]: {', '.join(duplicated)}: the engine's own setting(s) ({flags})")
    shared.update(from_engine)
    if spec.engine_overrides is not None:
        own.update(spec.engine_overrides(config))
    in_table = known - set(from_engine)
    unknown = sorted(set(own) - in_table)
    if unknown:
        raise ValueError(f"[{name}]: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(in_table))})")
    settings = settings_class(**{**{k: v for k, v in shared.items() if k in known}, **own})
    module: Module = getattr(package, spec.module_class)(settings)
    return module


class RunningModules:
    """The engine's modules: started in order before the engine listens, stopped in reverse after it stops."""

    def __init__(self, core: Core, config: EngineConfig, ports: WorkerPorts | None = None) -> None:
        self._core = core
        self._ports = ports
        self.modules: list[Module] = [build(name, config) for name in config.module_names]
        self.rbac: Module | None = build(RBAC, config) if config.rbac_port is not None else None
        """The rbac module, when ``--rbac-port`` is set (it is also in :attr:`modules`, before http)."""
        if self.rbac is not None:
            self.modules.append(self.rbac)
        elif RBAC in config.module_settings:
            log.warning("[rbac] settings given but no rbac_port (--rbac-port): the RBAC worker listener is off")
        self.http: Module | None = build(HTTP, config) if config.http_port >= 0 else None
        """The http module, unless ``--http-port`` is -1 (it is also the last of :attr:`modules`)."""
        if self.http is not None:
            self.modules.append(self.http)
        self._started: list[Module] = []

    async def start(self) -> None:
        """Start every module (each registers its functions and trigger types); stops the started ones and
        raises if one cannot start (a Redis that does not answer, a data directory that cannot be written):
        ``RuntimeError``, or ``OSError`` for the http module's address that cannot be bound."""
        from iii.engine.module_host import InProcessHost

        for module in self.modules:
            try:
                await module.start(InProcessHost(self._core, module.name, self._ports))
            except Exception as exc:
                await self.stop()
                hint = _START_HINTS.get(module.name)
                if hint is not None and isinstance(exc, OSError):  # an address it cannot bind: the message says which
                    raise OSError(exc.errno, f"{exc.strerror or exc}{hint}") from None
                raise RuntimeError(f"module {module.name} could not start: {exc}") from exc
            self._started.append(module)
            log.info("module=%s started %s", module.name, _describe(module))

    async def stop_http(self) -> None:
        """Stop the http module ahead of the others (its requests in progress are answered, new ones refused)."""
        if self.http is not None and self.http in self._started:
            self._started.remove(self.http)
            try:
                await self.http.stop()
            except Exception:
                log.exception("module=%s did not stop cleanly", self.http.name)

    async def stop(self) -> None:
        """Stop the started modules, last first (each finishes its pending durable writes)."""
        while self._started:
            module = self._started.pop()
            try:
                await module.stop()
            except Exception:
                log.exception("module=%s did not stop cleanly", module.name)

    def metrics(self) -> Iterable[tuple[str, MetricSample]]:
        """Every sample of every running module, with the module's name."""
        for module in self._started:
            try:
                samples = list(module.metrics())
            except Exception:
                log.exception("module=%s metrics failed", module.name)
                continue
            for sample in samples:
                yield module.name, sample

    def snapshots(self) -> dict[str, Any]:
        """Each running module's summary for the console, by name."""
        found: dict[str, Any] = {}
        for module in self._started:
            try:
                found[module.name] = dict(module.snapshot())
            except Exception:
                log.exception("module=%s snapshot failed", module.name)
        return found

    async def console_query(self, name: str, query: Any) -> Any:
        """The running module ``name``'s answer to a console page's query (:class:`ConsoleQueries`);
        ``LookupError`` when no such module runs or it answers none, ``ValueError`` for a malformed query."""
        for module in self._started:
            if module.name == name:
                if not isinstance(module, ConsoleQueries):
                    raise LookupError(f"module {name} answers no console queries")
                return await module.console_query(query)
        raise LookupError(f"module {name} is not running")


def _describe(module: Module) -> str:
    """What the module's snapshot says of its backend, for the start-up log line."""
    try:
        backend = module.snapshot().get("backend")
    except Exception:
        return ""
    return f"backend={backend}" if backend else ""
