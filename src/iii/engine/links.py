"""Links between the engines of a cluster: this engine, as a worker of another engine, calls what is served there.

A link is a :class:`~iii.engine.peers.Host` of this engine's core. A function served on the other engine is
registered here with the link as its owner, so a call of it starts as every call does (``Calls.start``: the
router's dispatch id, the deadline, the caller's limits) and its delivery goes over the link as it would to a
worker: an ``invokefunction`` whose invocation id is this engine's dispatch id. The other engine routes it to its
own worker like any worker's call and answers with an ``invocationresult`` for that id, which completes the call
here (``Calls.on_result``: accepted only from the link the call went to). To the other engine a link is an
ordinary worker that calls functions; nothing there knows about clusters.

Failures are said at once: losing the link fails every call in flight on it with ``invocation_stopped`` and
removes the functions it carried (``Core.link_lost``), so new calls get ``function_not_found`` instead of waiting
for a deadline. A link pings every :attr:`EngineLink.ping_interval_s`; one that stays silent for
:attr:`EngineLink.ping_timeout_s` is dropped (a dead engine whose socket the kernel still holds).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Final

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from iii.engine.peers import ConnectionSession
from iii.engine.read_holds import ReadHolds
from iii.protocol.codec import decode_from_engine, encode, encode_value
from iii.protocol.messages import InvocationResult, InvokeFunction, Ping, Pong, TriggerAction, WorkerRegistered

if TYPE_CHECKING:
    from iii.engine.core import Core

log = logging.getLogger("iii.engine.links")

LINK_NAME: Final = "iii-engine-link"
"""The worker name a link registers with on the other engine (its listings show links as such)."""
MAX_LINK_FRAME: Final = 2**31
"""Frames a link reads: the other engine enforces its own message limit already."""


class LinkError(Exception):
    """The link could not be made (no engine at the address, refused, no answer in time)."""


class EngineLink(ReadHolds, WSListener):
    """This engine's worker connection to another engine (see the module docstring)."""

    def __init__(
        self,
        core: Core,
        url: str,
        *,
        token: str | None = None,
        name: str | None = None,
        ping_interval_s: float = 1.0,
        ping_timeout_s: float = 2.0,
    ) -> None:
        # Results over the link for a worker of this engine whose buffer is full hold back the link's reading;
        # calls of workers for the link hold back theirs (the other engine then stops reading its workers).
        super().__init__()
        self.core = core
        self.url = url
        self.token = token
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        # Host
        self.worker_id = f"link-{uuid.uuid4()}"
        self.name = name or f"link to {url}"
        """What listings show as the worker of the functions reached over the link, and logs and errors say."""
        self.features: frozenset[str] = frozenset()
        self.session: ConnectionSession | None = None
        self.alive = False
        self.remote_worker_id: str | None = None
        """The id the other engine gave this link."""
        self.transport: WSTransport | None = None
        self._registered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()
        self._last_heard = time.monotonic()
        self._pinger: asyncio.Task[None] | None = None
        self._fragments: bytearray | None = None

    def __repr__(self) -> str:
        return f"<engine link to {self.url}>"

    # --- opening and closing ----------------------------------------------------------------------------

    async def open(self, timeout_s: float = 10.0) -> None:
        """Connect and register as a worker of the other engine; :class:`LinkError` if that cannot be done."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            await asyncio.wait_for(
                ws_connect(lambda: self, self.url, extra_headers=headers, max_frame_size=MAX_LINK_FRAME), timeout_s
            )
            await asyncio.wait_for(asyncio.shield(self._registered), timeout_s)
        except (OSError, TimeoutError, ConnectionError) as exc:
            self.close()
            raise LinkError(f"no link to the engine at {self.url}: {exc or type(exc).__name__}") from None
        except Exception as exc:  # picows' handshake errors (a refused token: 401)
            self.close()
            raise LinkError(f"no link to the engine at {self.url}: {exc}") from None
        self.send_message(
            encode(
                InvokeFunction(
                    function_id="engine::workers::register",
                    data=encode_register(),
                    action=TriggerAction("void"),
                )
            )
        )
        self._pinger = asyncio.ensure_future(self._ping())
        log.info("link to the engine at %s open (its worker %s)", self.url, self.remote_worker_id)

    def close(self) -> None:
        """Close the link; what it carried is failed and removed (``Core.link_lost``) when it is down."""
        if self._pinger is not None:
            self._pinger.cancel()
        if self.transport is not None:
            self.transport.send_close()
            self.transport.disconnect()

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval_s)
            if not self.alive:
                return
            if time.monotonic() - self._last_heard > self.ping_timeout_s:
                log.warning("link to %s: no answer for %.1fs, dropped", self.url, self.ping_timeout_s)
                if self.transport is not None:
                    self.transport.disconnect(graceful=False)
                return
            self.send_message(encode(Ping()))

    # --- Host -------------------------------------------------------------------------------------------

    def send_message(self, payload: bytes) -> None:
        if self.alive and self.transport is not None:
            self.transport.send(WSMsgType.TEXT, payload)

    # --- WSListener -------------------------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.alive = True

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self._last_heard = time.monotonic()
        if frame.msg_type is WSMsgType.TEXT:
            if frame.fin:
                self._on_text(frame.get_payload_as_bytes())
            else:
                self._fragments = bytearray(frame.get_payload_as_memoryview())
        elif frame.msg_type is WSMsgType.CONTINUATION and self._fragments is not None:
            self._fragments += frame.get_payload_as_memoryview()
            if frame.fin:
                payload, self._fragments = bytes(self._fragments), None
                self._on_text(payload)
        elif frame.msg_type is WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close()
            transport.disconnect()
        elif frame.msg_type is WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())

    def _on_text(self, payload: bytes) -> None:
        try:
            message = decode_from_engine(payload)
        except Exception:
            log.warning("link to %s: a message that could not be decoded was dropped", self.url)
            return
        if isinstance(message, InvocationResult):
            self.core.on_link_result(self, message)
        elif isinstance(message, WorkerRegistered):
            self.remote_worker_id = message.worker_id
            if not self._registered.done():
                self._registered.set_result(None)
        elif isinstance(message, Pong):
            pass  # heard: _last_heard is refreshed by every frame

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        was_alive, self.alive = self.alive, False
        if self._pinger is not None:
            self._pinger.cancel()
        self.closed.set()
        self.drop_holds()
        if not self._registered.done():
            self._registered.set_exception(ConnectionError("the engine closed the link before registering it"))
        if was_alive:
            log.info("link to the engine at %s closed", self.url)
            self.core.link_lost(self)


def encode_register() -> msgspec.Raw:
    """The ``engine::workers::register`` payload of a link: it says what it is in the other engine's listings."""
    return msgspec.Raw(encode_value({"name": LINK_NAME, "runtime": "iii-engine"}))
