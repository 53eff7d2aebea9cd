"""A module's worker port: another port where workers connect, each admitted by the module's gate.

Routes (WebSocket upgrades):

* ``/``: a worker control socket whose connection lives under a :class:`~iii.engine.sessions.GatedSession`
  (admitted by the module's :class:`~iii.modules.api.WorkerGate`, then held to its policy);
* ``/ws/channels/{channel_id}?key=…&dir=read|write``: one end of a channel, as on the engine's port (the key is
  the capability: an SDK connected here opens its channels here);
* ``/otel``: telemetry, as on the engine's port.

Nothing else: the metrics, the console and the engine's token belong to the engine's own port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from picows import WSListener, WSTransport, WSUpgradeRequest, WSUpgradeResponseWithListener

from iii.engine.config import EngineConfig
from iii.engine.core import Core
from iii.engine.sessions import GatedSession
from iii.engine.sockets import http_error
from iii.engine.worker_socket import Outbox, WorkerConnection
from iii.modules.api import WorkerGate
from iii.protocol.refs import CHANNEL_PATH_PREFIX

Listener = WSListener | WSUpgradeResponseWithListener | None
Route = Callable[[WSUpgradeRequest], Listener]


class Server(Protocol):
    """What a worker port needs of the engine's server (:class:`iii.engine.server.Engine`)."""

    core: Core
    config: EngineConfig
    outbox: Outbox

    @property
    def stopping(self) -> bool: ...

    def track(self, transport: WSTransport, connected: bool) -> None: ...

    async def listen(self, route: Route, host: str, port: int, *, start_serving: bool = True) -> asyncio.Server: ...

    def route_channel(self, channel_id: str, query: str) -> WSListener | WSUpgradeResponseWithListener: ...

    def telemetry_socket(self) -> WSListener: ...


def request_headers(request: WSUpgradeRequest) -> dict[str, str]:
    """The request's headers by lower-case name; the values of a header sent twice joined with ``, ``."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


class GatedPort:
    """One worker port of a module (see the module docstring)."""

    def __init__(self, engine: Server, module: str, gate: WorkerGate) -> None:
        self._engine = engine
        self._module = module
        self._gate = gate
        self._server: asyncio.Server | None = None
        self._host = ""

    async def start(self, host: str, port: int) -> None:
        """Bind and serve; ``OSError`` naming the address when it cannot be bound."""
        self._host = host
        self._server = await self._engine.listen(self._route, host, port)

    @property
    def port(self) -> int:
        assert self._server is not None, "worker port not started"
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"ws://{host}:{self.port}"

    def stop_accepting(self) -> None:
        """Take no more connections (the engine is stopping; it closes the sockets it has)."""
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        """Take no more connections, and close the workers connected here."""
        self.stop_accepting()
        for worker in list(self._engine.core.workers.values()):
            if isinstance(worker.session, GatedSession) and worker.session.module == self._module:
                worker.close(1001, f"the {self._module} worker port is closing")

    def _route(self, request: WSUpgradeRequest) -> Listener:
        engine = self._engine
        if engine.stopping:
            return http_error(503, "the engine is shutting down")
        target = urlsplit(request.path.decode("latin-1"))
        path = target.path
        if path.startswith(CHANNEL_PATH_PREFIX):
            return engine.route_channel(unquote(path[len(CHANNEL_PATH_PREFIX) :]), target.query)
        if path in ("/", ""):
            query = parse_qs(target.query, keep_blank_values=True)
            session = GatedSession(engine.core, self._gate, self._module, request_headers(request), query)
            return WorkerConnection(engine.core, engine.track, engine.outbox, engine.config.max_message_bytes, session)
        if path == "/otel":
            return engine.telemetry_socket()
        return None  # picows answers 404
