"""The worker's connection to the engine: one control socket at a time, reconnected with backoff.

:class:`Connection` runs on the SDK loop. It connects (the first time within ``connect_timeout_s``), reads
``workerregistered`` (the engine's terms), then tells its owner that a connection is open so the owner can
replay what it has registered; every later message goes to the owner's ``on_message``. When the socket drops
it tells the owner (calls waiting on it have failed in the engine) and reconnects. An engine that refuses
the worker, or a URL where no iii engine answers, fails it for good (``on_failed``); retrying cannot help.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import errno
import logging
import re
import socket
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any, Final

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSHandshakeError,
    WSInvalidStatusError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

from iii.errors import EngineError, EngineRefusedError, EngineUnavailableError, InvocationError
from iii.protocol import close_codes, errors
from iii.protocol.codec import decode_from_engine, encode
from iii.protocol.messages import InvocationResult, WorkerRegistered
from iii.sdk.options import InitOptions
from iii.sdk.terms import EngineTerms

log = logging.getLogger("iii.sdk")

MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
"""The largest message this side reads."""
_REFUSED_CODES: Final = frozenset((close_codes.POLICY_VIOLATION,))
_TRANSIENT_STATUSES: Final = frozenset((408, 429, 500, 502, 503, 504))
"""Upgrade answers worth retrying (busy, starting, shutting down); any other non-101 status means no engine
at the URL, and is fatal."""


class ConnectionState(enum.StrEnum):
    """Where a client's connection to the engine stands (values are the official SDK's state names)."""

    CONNECTING = "connecting"
    """The first connection is being made."""
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    """The connection was lost; the client retries (calls made meanwhile wait, up to their timeout)."""
    FAILED = "failed"
    """Refused for good (a wrong token, no engine at the URL): no retry."""
    DISCONNECTED = "disconnected"
    """Shut down."""


class ControlSocket(WSListener):
    """The picows listener of the worker socket: frames in, flow control, how it ended."""

    def __init__(self, on_message: Callable[[Any], None]) -> None:
        self.on_message = on_message
        self.transport: WSTransport | None = None
        self.registered: asyncio.Future[WorkerRegistered] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.close_code: int | None = None
        self.close_reason = ""
        self._fragments: bytearray | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.TEXT:
            if frame.fin:
                self._on_text(frame.get_payload_as_bytes())
            else:
                self._fragments = bytearray(frame.get_payload_as_memoryview())
        elif msg_type is WSMsgType.CONTINUATION and self._fragments is not None:
            self._fragments += frame.get_payload_as_memoryview()
            if frame.fin:
                payload, self._fragments = bytes(self._fragments), None
                self._on_text(payload)
        elif msg_type is WSMsgType.CLOSE:
            self.close_code = frame.get_close_code().value
            self.close_reason = frame.get_close_reason() or ""
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def _on_text(self, payload: bytes) -> None:
        message = decode_from_engine(payload)
        if isinstance(message, WorkerRegistered):
            if not self.registered.done():
                self.registered.set_result(message)
        elif message is not None:
            self.on_message(message)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed.set()
        self.writable.set()
        if not self.registered.done():
            self.registered.set_exception(ConnectionError("the engine closed the connection before registering"))

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.closed.is_set()


class Connection:
    """One worker's connection: connect, reconnect, send, and what the engine announced (``terms``).

    The owner gives four callbacks, all called on the SDK loop: ``on_open()`` when a connection is
    registered (replay registrations there; :attr:`previous_worker_id` says whether this is a reconnect),
    ``on_message(message)`` for every message after ``workerregistered``, ``on_lost()`` when an open
    connection drops, and ``on_failed(error)`` when the connection fails for good.

    With several engine addresses (engines of one cluster, or a standby), a connection that cannot be made or
    is lost moves on to the next address at once; the reconnection delay applies once every address was tried
    without success.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        options: InitOptions,
        headers: dict[str, str],
        *,
        on_open: Callable[[], None],
        on_message: Callable[[Any], None],
        on_lost: Callable[[], None],
        on_failed: Callable[[BaseException], None],
    ) -> None:
        self.addresses = list(addresses)
        self._current = 0
        self.options = options
        self.headers = headers
        self._on_open = on_open
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_failed = on_failed
        self.terms = EngineTerms()
        """What the engine announced (its message limit, its channel close semantics), per connection."""
        self.socket: ControlSocket | None = None
        self.state = ConnectionState.CONNECTING
        self._state_listeners: list[Callable[[str], Any]] = []
        self.worker_id: str | None = None
        self.reattach_token: str | None = None
        self.previous_worker_id: str | None = None
        """The worker id of the connection before the current one (None on the first)."""
        self.previous_reattach_token: str | None = None
        self.fatal: BaseException | None = None
        self.stopping = False
        self.first_connect: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._open: asyncio.Event | None = None
        self._last_failure: str | None = None
        """Why the latest connection attempt failed, for the errors of callers still waiting to connect."""

    @property
    def address(self) -> str:
        """The engine address in use (or being tried)."""
        return self.addresses[self._current]

    # --- state -----------------------------------------------------------------------------------------

    def add_state_listener(self, listener: Callable[[str], Any]) -> Callable[[], None]:
        self._state_listeners.append(listener)
        listener(self.state)
        return lambda: self._state_listeners.remove(listener) if listener in self._state_listeners else None

    def set_state(self, state: ConnectionState) -> None:
        if state == self.state:
            return
        self.state = state
        for listener in list(self._state_listeners):
            try:
                listener(state)
            except Exception:
                log.exception("connection state listener failed")

    @property
    def is_open(self) -> bool:
        return self._open is not None and self._open.is_set()

    def failure_note(self) -> str:
        """``": <why the last attempt failed>"``, or nothing if no attempt has failed yet."""
        return f": {self._last_failure}" if self._last_failure else ""

    def wait_until_open(self, timeout_s: float) -> None:
        """Block until the first connection is up; raises the reason if it cannot be made."""
        try:
            self.first_connect.result(timeout_s)
        except concurrent.futures.TimeoutError:
            where = ", ".join(self.addresses)
            raise EngineUnavailableError(
                f"could not connect to the iii engine at {where} within {timeout_s}s{self.failure_note()}"
            ) from None

    async def await_open(self, timeout_s: float) -> None:
        """Wait until connected (up to ``timeout_s``: ``TIMEOUT``); raises the fatal error if there is one."""
        if self.fatal is not None:
            raise self.fatal
        assert self._open is not None
        if not self._open.is_set():
            try:
                await asyncio.wait_for(self._open.wait(), timeout_s)
            except TimeoutError:
                note = self.failure_note()
                raise InvocationError(
                    "TIMEOUT", f"not connected to the engine at {self.address} within {timeout_s}s{note}"
                ) from None

    # --- sending ---------------------------------------------------------------------------------------

    def send(self, message: Any) -> bool:
        """Send now if connected; returns whether it was sent (registrations are replayed on reconnect).

        Raises :class:`InvocationError` ``message_too_big``, sending nothing, for a message over the engine's
        limit (the engine would refuse it; the connection stays as it is).
        """
        listener = self.socket
        if listener is None or listener.transport is None or listener.closed.is_set():
            return False
        encoded = encode(message)
        limit = self.terms.max_message_bytes
        if limit is not None and len(encoded) > limit:
            what = "result" if isinstance(message, InvocationResult) else type(message).__name__
            function_id = getattr(message, "function_id", None)
            raise InvocationError(
                errors.MESSAGE_TOO_BIG,
                f"the {what} for {function_id} is {len(encoded)} bytes, over the engine's limit of {limit}: not sent",
                function_id,
            )
        listener.transport.send(WSMsgType.TEXT, encoded)
        return True

    async def close(self) -> None:
        """Close the socket politely (shutdown)."""
        listener = self.socket
        if listener is not None and listener.transport is not None and not listener.closed.is_set():
            listener.transport.send_close(WSCloseCode.OK)
            listener.transport.disconnect()
            try:
                await asyncio.wait_for(listener.closed.wait(), 5)
            except TimeoutError:
                listener.transport.disconnect(graceful=False)

    # --- the connection loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._open = asyncio.Event()
        attempt = 0
        failed_in_round = 0
        """Addresses tried without success since the last connection or the last delay."""
        ever_connected = False
        config = self.options.reconnection_config
        while not self.stopping:
            try:
                await self._connect_once()
                self._last_failure = None
                ever_connected = True
                attempt = failed_in_round = 0
                assert self.socket is not None
                await self.socket.closed.wait()
                self._lost()
            except EngineError as refusal:  # refused, or no iii engine at this URL: retrying cannot help
                self.fail_for_good(refusal)
                return
            except (OSError, WSError, ConnectionError) as exc:
                self._last_failure = describe_connect_failure(exc)
                log.debug("connecting to %s failed: %s", self.address, self._last_failure)
            except Exception as exc:  # a bug, not a network problem: say so at once instead of retrying blind
                log.exception("the connection to %s failed unexpectedly", self.address)
                self.fail_for_good(EngineError(f"the connection to {self.address} failed: {exc!r}"))
                return
            if self.stopping:
                return
            failed_in_round += 1
            if len(self.addresses) > 1:
                self._current = (self._current + 1) % len(self.addresses)
                if failed_in_round < len(self.addresses):
                    log.warning("no engine at the previous address; trying %s", self.address)
                    continue  # the next engine at once: the delay is for when none answers
            failed_in_round = 0
            if 0 <= config.max_retries <= attempt:
                what = "gave up reconnecting to" if ever_connected else "could not connect to the iii engine at"
                where = ", ".join(self.addresses)
                self.fail_for_good(EngineUnavailableError(f"{what} {where}{self.failure_note()}"))
                return
            delay = config.delay_s(attempt)
            attempt += 1
            if ever_connected:
                log.warning("connection to the engine lost; reconnecting in %.1fs", delay)
            await asyncio.sleep(delay)

    def fail_for_good(self, error: BaseException) -> None:
        self.fatal = error
        self.stopping = True
        self.set_state(ConnectionState.FAILED)
        if not self.first_connect.done():
            self.first_connect.set_exception(error)
        self._on_failed(error)
        log.error("%s", error)

    def _auto_ping(self) -> dict[str, Any]:
        """picows' keep-alive settings: ping after ``ping_idle_s`` of silence, give up ``ping_timeout_s`` later.

        picows wants the reply timeout no longer than the idle time, so the idle time is raised to match.
        """
        idle, timeout = self.options.ping_idle_s, self.options.ping_timeout_s
        if idle <= 0:
            return {"enable_auto_ping": False}
        return {
            "enable_auto_ping": True,
            "auto_ping_idle_timeout": max(idle, timeout),
            "auto_ping_reply_timeout": timeout,
        }

    async def _connect_once(self) -> None:
        listener = ControlSocket(self._on_message)
        try:
            await ws_connect(
                lambda: listener,
                self.address,
                extra_headers=self.headers or None,
                max_frame_size=MAX_MESSAGE_BYTES,
                **self._auto_ping(),
            )
        except WSInvalidStatusError as exc:
            status = int(exc.response.status) if exc.response is not None else 0
            if status in (401, 403):
                raise EngineRefusedError(f"the engine at {self.address} refused this worker (HTTP {status})") from None
            if status in _TRANSIENT_STATUSES:  # a proxy in front of an engine that is starting, say: try again
                raise ConnectionError(f"the server answered HTTP {_status_text(status)}") from None
            raise EngineUnavailableError(
                f"no iii engine at {self.address}: the server answered the WebSocket upgrade with HTTP "
                f"{_status_text(status)} (is the URL right? an engine takes workers at ws://<host>:<port>/, "
                f"port 49134 by default)"
            ) from None
        except WSHandshakeError as exc:  # an answer that is not HTTP, or not a WebSocket upgrade
            raise EngineUnavailableError(
                f"no iii engine at {self.address}: the server there does not speak WebSocket ({exc})"
            ) from None
        if listener.transport is None:  # picows returns normally when the server hangs up mid-handshake
            raise ConnectionError("the server closed the connection during the WebSocket handshake")
        try:
            registered = await asyncio.wait_for(asyncio.shield(listener.registered), self.options.connect_timeout_s)
        except (ConnectionError, TimeoutError):
            if listener.close_code in _REFUSED_CODES:
                raise EngineRefusedError(
                    f"the engine at {self.address} refused this worker: {listener.close_reason}"
                ) from None
            if listener.close_code is not None:  # 1013 "try again later", say: retried, and the reason kept
                why = f"{listener.close_code}: {listener.close_reason}".rstrip(": ")
                raise ConnectionError(f"the engine closed the connection before registering it ({why})") from None
            raise
        self.socket = listener
        self.previous_worker_id, self.previous_reattach_token = self.worker_id, self.reattach_token
        self.worker_id, self.reattach_token = registered.worker_id, registered.reattach_token
        self.terms.update(registered)
        self._on_open()
        assert self._open is not None
        self._open.set()
        self.set_state(ConnectionState.CONNECTED)
        if not self.first_connect.done():
            self.first_connect.set_result(None)
        log.info("connected to %s as worker %s", self.address, registered.worker_id)

    def _lost(self) -> None:
        assert self._open is not None
        self._open.clear()
        if not self.stopping:
            self.set_state(ConnectionState.RECONNECTING)
        listener = self.socket
        if listener is not None and listener.close_code in _REFUSED_CODES and "unauthorized" in listener.close_reason:
            raise EngineRefusedError(f"the engine at {self.address} refused this worker: {listener.close_reason}")
        self._on_lost()


def describe_connect_failure(exc: BaseException) -> str:
    """Why one connection attempt failed, in words (it is retried)."""
    text = str(exc) or type(exc).__name__
    # asyncio reports a host with several addresses (localhost: ::1 and 127.0.0.1) as one OSError listing each.
    codes = {int(code) for code in re.findall(r"\[Errno (\d+)\]", text)}
    if isinstance(exc, ConnectionRefusedError) or (isinstance(exc, OSError) and codes == {errno.ECONNREFUSED}):
        return "connection refused (nothing listens there: is the engine running?)"
    if isinstance(exc, socket.gaierror):
        return f"the host name does not resolve ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "no answer to the WebSocket handshake"
    return text


def _status_text(status: int) -> str:
    """``404 Not Found``: an HTTP status with its standard phrase, if it has one."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
