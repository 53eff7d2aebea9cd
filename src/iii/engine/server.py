"""The engine's server: one listener, the routes behind it, the modules' lifetime, and the housekeeping ticks.

What each worker message does is the core's business (:mod:`iii.engine.core`): a worker socket hands its
decoded messages there. The modules (:mod:`iii.engine.modules`) start once the engine's port is bound and
before it accepts anyone, and stop after it stops accepting (the http module first).

Routes (all WebSocket upgrades on one port):

* ``/``: the worker control socket (:mod:`iii.engine.worker_socket`);
* ``/ws/channels/{channel_id}?key=…&dir=read|write``: one end of a channel (:mod:`iii.engine.sockets`); in a
  cluster, an end of another engine's channel is relayed to that engine (:mod:`iii.engine.channel_relay`);
* ``/otel``: telemetry from the SDKs, for the module that receives it (read and discarded when none does);
* ``GET /metrics`` (plain HTTP): Prometheus metrics (:mod:`iii.engine.metrics`);
* ``GET /console`` and ``/console/state`` (plain HTTP): the live console page (:mod:`iii.engine.console`);
* ``/console/query``: the console page's questions to the modules (:mod:`iii.engine.console_socket`).

With ``--redis-url`` the engine joins a cluster (:mod:`iii.engine.cluster`) once its modules run and before it
accepts anyone, and leaves it first when it stops.

HTTP triggers are served on a port of their own, by the http module (:mod:`iii.modules.http`), and a module may
open a port where its gate admits workers (:mod:`iii.engine.worker_ports`: the rbac module's listener).

Message handling is synchronous and runs in picows' frame callbacks: an invocation is decoded, routed by
the core and written to its host without a task switch. Time-based work (call deadlines, channel expiry, pings of
silent workers, handing freed memory back) runs in one housekeeping task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

from picows import (
    WSListener,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)
from redis.exceptions import RedisError

from iii.engine import console
from iii.engine.channel_relay import ChannelRelay
from iii.engine.channels import KeyCheck, Role, channel_owner
from iii.engine.cluster import Cluster, new_engine_id
from iii.engine.config import EngineConfig
from iii.engine.console_socket import QUERY_PATH, ConsoleSocket
from iii.engine.core import Core
from iii.engine.memory import release_free_memory
from iii.engine.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from iii.engine.modules import RunningModules
from iii.engine.sockets import ChannelSocket, RefusingSocket, TelemetrySocket, http_error, linger_close
from iii.engine.telemetry_intake import TelemetryIntake
from iii.engine.worker_ports import GatedPort, Route
from iii.engine.worker_socket import Outbox, WorkerConnection, read_limit
from iii.modules.api import WorkerGate
from iii.modules.http import HttpModule
from iii.modules.rbac import RbacModule
from iii.protocol import close_codes
from iii.protocol.codec import encode_value
from iii.protocol.refs import CHANNEL_PATH_PREFIX

log = logging.getLogger("iii.engine")

_HOUSEKEEPING_TICK_S: Final = 0.05
_READ_BUFFER_INIT_BYTES: Final = 4096
_HANG_UP_CHECK_S: Final = 0.5
"""How often held-back channel writers are checked for a hang-up (one getsockopt each)."""


class Engine:
    """An iii engine bound to one host and port. Use :meth:`start` and :meth:`stop`, or ``async with``."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.core = Core(self.config)
        # The core's tables, for inspection (tests, the CLI's in-process engine).
        self.functions = self.core.functions
        self.router = self.core.router
        self.channels = self.core.channels
        self.workers = self.core.workers
        self.triggers = self.core.triggers
        self.metrics = self.core.metrics
        self.builtins = self.core.builtins
        self.availability = self.core.availability
        self.outbox = Outbox()
        self.modules = RunningModules(self.core, self.config, ports=self)
        self.metrics.module_samples = self.modules.metrics
        http = self.modules.http
        assert http is None or isinstance(http, HttpModule)
        self.http: HttpModule | None = http
        """The http module (its routes, its URL), unless ``--http-port`` is -1."""
        rbac = self.modules.rbac
        assert rbac is None or isinstance(rbac, RbacModule)
        self.rbac: RbacModule | None = rbac
        """The rbac module (its worker port's URL), when ``--rbac-port`` is set."""
        self.engine_id = new_engine_id()
        """This engine's id in a cluster (and in its log)."""
        self.cluster: Cluster | None = None
        """This engine's part in a cluster, when ``--redis-url`` is set."""
        self._worker_ports: list[GatedPort] = []
        self._server: asyncio.Server | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._sockets: set[WSTransport] = set()
        self._relays: set[ChannelRelay] = set()
        """Channel ends relayed to the other engines of a cluster."""
        self.telemetry_intake = TelemetryIntake(self.core.on_telemetry)
        """The ``/otel`` messages on their way to the core, a bounded cost per turn of the loop."""
        self._stopping = False

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind, start the modules, and start serving; returns once the port is open."""
        # Workers come in once the modules serve.
        self._server = await self.listen(self._route, self.config.host, self.config.port, start_serving=False)
        try:
            await self.modules.start()
            if self.config.redis_url:
                await self._join_cluster(self.config.redis_url)
        except BaseException:
            self._server.close()
            await self.modules.stop()
            raise
        await self._server.start_serving()
        self._housekeeping = asyncio.get_running_loop().create_task(self._run_housekeeping())
        log.info("iii engine listening on %s", self.url)
        if self.http is not None:
            log.info("HTTP triggers on %s", self.http.url)

    async def _join_cluster(self, redis_url: str) -> None:
        self.cluster = Cluster(self.core, redis_url, self.engine_id, self.advertise_url, token=self.config.token)
        try:
            await self.cluster.start()
        except (OSError, RedisError) as exc:
            self.cluster = None
            raise OSError(f"cannot join the cluster: Redis unreachable ({exc})") from None
        cluster = self.cluster
        relays = self._relays
        self.builtins.release_elsewhere = cluster.release_elsewhere
        self.metrics.cluster_gauges = lambda: [
            *cluster.gauges(),
            ("iii_channel_relays_open", "Channel ends relayed to the engine that owns their channel", len(relays)),
        ]

    @property
    def advertise_url(self) -> str:
        """Where the other engines of a cluster reach this one (``--advertise-url``, else its own address)."""
        if self.config.advertise_url:
            return self.config.advertise_url
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"ws://{host}:{self.port}"

    async def listen(self, route: Route, host: str, port: int, *, start_serving: bool = True) -> asyncio.Server:
        """A WebSocket server of this engine on ``host:port``, routed by ``route``; ``OSError`` naming the address
        when it cannot be bound."""
        try:
            return await ws_create_server(
                route,
                host,
                port,
                websocket_handshake_timeout=self.config.handshake_timeout_s,
                max_frame_size=read_limit(self.config.max_message_bytes),
                # Idle sockets dominate memory with many connections; picows grows the buffer when needed.
                read_buffer_init_size=_READ_BUFFER_INIT_BYTES,
                logger_name="iii.engine.ws",
                start_serving=start_serving,
            )
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    async def open_worker_port(self, module: str, host: str, port: int, gate: WorkerGate) -> GatedPort:
        """A port where ``gate`` admits workers for ``module`` (:meth:`iii.modules.api.ModuleHost.serve_workers`)."""
        opened = GatedPort(self, module, gate)
        await opened.start(host, port)
        self._worker_ports.append(opened)
        log.info("module=%s serves workers on %s", module, opened.url)
        return opened

    @property
    def stopping(self) -> bool:
        """The engine is shutting down (new connections are refused)."""
        return self._stopping

    @property
    def port(self) -> int:
        assert self._server is not None, "engine not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    async def stop(self) -> None:
        """Shut down: stop accepting, fail pending calls with ``invocation_stopped``, close every socket.

        Callers are told before their sockets close. A socket with nothing to end (a worker's, an SDK's
        telemetry, a console page's) is closed with 1001 (going away); the others end as their streams say.
        Idempotent.
        """
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for worker_port in self._worker_ports:
            worker_port.stop_accepting()
        await self.modules.stop_http()
        if self.cluster is not None:
            await self.cluster.stop()  # the others stop routing here; calls over links fail now
        self.availability.close()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        stopped = self.core.calls.stop_all("Invocation stopped: the engine is shutting down")
        await self.modules.stop()
        self.channels.abort_all(close_codes.SERVICE_RESTART, "the engine is shutting down")
        for relay in list(self._relays):
            relay.close(close_codes.SERVICE_RESTART, "the engine is shutting down")
        for worker in list(self.workers.values()):
            worker.close(close_codes.GOING_AWAY, "the engine is shutting down")
        for transport in list(self._sockets):  # the rest (the SDKs' telemetry, the console's queries) go too
            linger_close(transport, close_codes.GOING_AWAY, "the engine is shutting down")
        pending = [asyncio.ensure_future(t.wait_disconnected()) for t in list(self._sockets)]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.config.shutdown_grace_s)
            for future in late:
                future.cancel()
            for transport in list(self._sockets):
                transport.disconnect(graceful=False)
        log.info("iii engine stopped (%d calls stopped)", stopped)

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def track(self, transport: WSTransport, connected: bool) -> None:
        """Keep the set of open sockets that shutdown must close."""
        if connected:
            self._sockets.add(transport)
        else:
            self._sockets.discard(transport)

    async def _run_housekeeping(self) -> None:
        interval = self.config.worker_ping_interval_s
        check_every = min(max(interval / 4, _HOUSEKEEPING_TICK_S), 1.0)
        next_check = time.monotonic() + check_every
        trim_every = self.config.memory_trim_interval_s
        next_trim = time.monotonic() + trim_every
        next_hang_up_check = time.monotonic() + _HANG_UP_CHECK_S
        while True:
            await asyncio.sleep(_HOUSEKEEPING_TICK_S)
            try:
                self.core.calls.expire()
                self.core.observing.tick()
                self.channels.expire_due()
                now = time.monotonic()
                if interval > 0 and now >= next_check:
                    next_check = now + check_every
                    self._drop_silent_workers(now)
                if now >= next_hang_up_check:
                    next_hang_up_check = now + _HANG_UP_CHECK_S
                    for channel in self.channels.read_departed_writers():
                        log.info("channel=%s writer hung up while held back: reading what it left", channel.channel_id)
                if trim_every > 0 and now >= next_trim:
                    next_trim = now + trim_every
                    release_free_memory()
            except Exception:
                log.exception("housekeeping failed")

    def _drop_silent_workers(self, now: float) -> None:
        """Ping quiet workers; drop those that did not answer in time (their callers are told at once)."""
        interval, timeout = self.config.worker_ping_interval_s, self.config.worker_ping_timeout_s
        for worker in list(self.workers.values()):
            if not worker.check_alive(now, interval, timeout):
                log.warning(
                    "worker=%s name=%s silent after a ping for %.1fs: dropped", worker.worker_id, worker.name, timeout
                )
                if worker.transport is not None:
                    worker.transport.disconnect(graceful=False)

    # --- routing of new sockets ------------------------------------------------------------------------

    def _route(self, request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener | None:
        """Choose the listener for an upgrade request, or refuse it with an HTTP status."""
        if self._stopping:
            return http_error(503, "the engine is shutting down")
        target = urlsplit(request.path.decode("latin-1"))
        path = target.path
        if path.startswith(CHANNEL_PATH_PREFIX):
            # A channel end's key is itself the capability (the Node, Rust and Go SDKs send no headers here).
            return self.route_channel(unquote(path[len(CHANNEL_PATH_PREFIX) :]), target.query)
        authorized = self._authorized(request, target.query)
        if path == "/" or path == "":
            if not authorized:
                log.warning("refused a worker: missing or wrong bearer token")
                return RefusingSocket(
                    close_codes.POLICY_VIOLATION, "unauthorized: missing or wrong bearer token", self.track
                )
            return WorkerConnection(self.core, self.track, self.outbox, self.config.max_message_bytes)
        if path == "/otel":
            # The official Node SDK's telemetry socket carries neither a header nor a query: refused, it would
            # reconnect forever. Telemetry only goes in (it is stored, never answered), so accepting it gives
            # nothing away.
            return self.telemetry_socket()
        if path in console.PAGE_PATHS or path == console.STATE_PATH:
            return self._console(path, authorized)
        if path == QUERY_PATH:
            if not authorized:
                return http_error(401, "unauthorized: open the console with ?token=<the engine's token>")
            return ConsoleSocket(self.modules, self.track)
        if not authorized:
            return http_error(401, "unauthorized: missing or wrong bearer token")
        if path == "/metrics":
            body = self.metrics.render()
            response = WSUpgradeResponse.create_ok_response(body, {"Content-Type": METRICS_CONTENT_TYPE})
            return WSUpgradeResponseWithListener(response, None)
        return None  # picows answers 404

    def _console(self, path: str, authorized: bool) -> WSUpgradeResponseWithListener:
        if not authorized:
            return http_error(401, "unauthorized: open the console with ?token=<the engine's token>")
        if path == console.STATE_PATH:
            cluster = None if self.cluster is None else {**self.cluster.snapshot(), "relays": len(self._relays)}
            body = encode_value(console.state(self.core, self.builtins, self.modules.snapshots(), cluster))
            headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
        else:
            body = console.page()
            headers = {"Content-Type": "text/html; charset=utf-8"}
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_ok_response(body, headers), None)

    def _authorized(self, request: WSUpgradeRequest, query: str) -> bool:
        """Whether the request carries the engine's token (always true without one).

        The token is taken from ``Authorization: Bearer <token>``, or from ``?token=`` where a client
        cannot send a header (a browser's WebSocket, a Prometheus scrape URL). Compared in constant time.
        """
        token = self.config.token
        if token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(presented.strip().encode(), token.encode()):
            return True
        in_query = parse_qs(query).get("token", [""])[0]
        return secrets.compare_digest(in_query.encode(), token.encode())

    def telemetry_socket(self) -> TelemetrySocket:
        """The listener of an ``/otel`` connection: its messages go to the core's telemetry sink, if any."""
        core = self.core
        return TelemetrySocket(
            self.telemetry_intake.offer, lambda: core.receives_telemetry, self.config.max_message_bytes, self.track
        )

    def route_channel(self, channel_id: str, query: str) -> WSListener | WSUpgradeResponseWithListener:
        """The socket of one channel end, given its key (``?key=...&dir=read|write``), or why not."""
        params = parse_qs(query)
        keys, dirs = params.get("key", []), params.get("dir", [])
        if len(keys) != 1 or len(dirs) != 1 or dirs[0] not in ("read", "write"):
            return http_error(400, "channel sockets need one 'key' and one 'dir' of read or write")
        role = Role(dirs[0])
        outcome, channel = self.channels.check(channel_id, keys[0], role)
        if outcome is KeyCheck.NOT_FOUND or channel is None:
            owner = channel_owner(channel_id)
            if self.cluster is not None and owner is not None and owner != self.engine_id:
                return ChannelRelay(
                    channel_id,
                    keys[0],
                    role,
                    owner,
                    self.cluster.address_of,
                    self.config.max_message_bytes,
                    self.track,
                    self._relays,
                )
            return http_error(404, "Channel not found")
        if outcome is KeyCheck.WRONG_DIRECTION:
            other = "read" if role is Role.WRITER else "write"
            return http_error(403, f"this key opens the {other} end of the channel, not the {role.value} end")
        if outcome is KeyCheck.TAKEN:
            log.warning("channel=%s refused a second %s end", channel_id, role.value)
            reason = f"the {role.value} end of this channel is already taken"
            return RefusingSocket(close_codes.POLICY_VIOLATION, reason, self.track)
        self.channels.take(channel, role)
        return ChannelSocket(channel, role, self.config.max_message_bytes, self.track)
