"""The exporter's socket to the engine's ``/otel``: opened when there is something to send, retried with backoff
(quietly: debug log lines) when the engine cannot be reached or has no ``/otel``, and telling when the socket's
buffer drains again (backpressure). Telemetry only goes out on it; the engine sends nothing but a close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

log = logging.getLogger("iii.sdk.telemetry")

CONNECT_TIMEOUT_S: Final = 5.0
RETRY_MIN_S: Final = 1.0
RETRY_MAX_S: Final = 30.0


def otel_url(address: str) -> str:
    """The engine's telemetry address for a worker address: its path with ``/otel`` appended."""
    parts = urlsplit(address)
    path = parts.path.rstrip("/")
    if not path.endswith("/otel"):
        path = f"{path}/otel"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


class OtelSocket(WSListener):
    """The picows listener of the ``/otel`` socket: ``open`` while connected, ``writable`` while its buffer takes
    more (``on_writable`` is called when it does again); a close from the engine is answered."""

    def __init__(self, on_writable: Callable[[], None]) -> None:
        self.transport: WSTransport | None = None
        self.open = False
        self.writable = True
        self._on_writable = on_writable

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.open = True

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self._on_writable()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.open = False


class Connection:
    """The ``/otel`` socket of one exporter, on the SDK loop.

    :meth:`socket` gives the open socket, or starts connecting (one attempt at a time) and gives None; when the
    attempt succeeds ``on_connected`` is called, when it fails another is made after a backoff
    (:data:`RETRY_MIN_S` doubling up to :data:`RETRY_MAX_S`) if ``wanted()`` still says there is something to
    send. ``on_writable`` is called when a full socket buffer drains. After :meth:`stop` no attempt is started
    but :meth:`open_now`'s.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: Callable[[], str],
        headers: dict[str, str],
        on_connected: Callable[[], None],
        on_writable: Callable[[], None],
        wanted: Callable[[], bool],
    ) -> None:
        self._loop = loop
        self._address = address
        self._headers = headers
        self._on_connected = on_connected
        self._on_writable = on_writable
        self._wanted = wanted
        self._socket: OtelSocket | None = None
        self._connecting: asyncio.Task[None] | None = None
        self.failures = 0
        """Attempts failed in a row (0 once one succeeds)."""
        self._stopped = False

    def socket(self) -> OtelSocket | None:
        """The open socket; else None, and an attempt to connect is started (unless one is under way)."""
        socket = self._socket
        if socket is None or not socket.open:
            self._socket = None
            self._connect_soon()
            return None
        return socket

    def stop(self) -> None:
        """Start no more attempts (shutdown, or a forked child whose loop did not come along)."""
        self._stopped = True

    async def open_now(self) -> OtelSocket:
        """The open socket, opened now if need be (an attempt under way is cancelled); raises if it cannot be."""
        if self._socket is None or not self._socket.open:
            if self._connecting is not None:
                self._connecting.cancel()
                self._connecting = None
            self._socket = await self._open()
        return self._socket

    def close(self) -> None:
        """Close the socket, if open."""
        socket = self._socket
        if socket is not None and socket.transport is not None and socket.open:
            socket.transport.send_close(WSCloseCode.OK)
            socket.transport.disconnect()

    def _connect_soon(self) -> None:
        if self._connecting is None and not self._stopped:
            self._connecting = self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            socket = await self._open()
        except Exception as exc:  # unreachable, refused, no /otel: retried later, quietly
            self.failures += 1
            delay = min(RETRY_MIN_S * 2 ** (self.failures - 1), RETRY_MAX_S)
            log.debug("telemetry socket to %s failed (%s); retrying in %.0f s", self._address(), exc, delay)
            self._loop.call_later(delay, self._retry)
            return
        finally:
            self._connecting = None
        self.failures = 0
        self._socket = socket
        self._on_connected()

    def _retry(self) -> None:
        if self._wanted():
            self._connect_soon()

    async def _open(self) -> OtelSocket:
        listener = OtelSocket(self._on_writable)
        await asyncio.wait_for(
            ws_connect(
                lambda: listener,
                otel_url(self._address()),
                extra_headers=self._headers or None,
                enable_auto_ping=False,
            ),
            CONNECT_TIMEOUT_S,
        )
        return listener
