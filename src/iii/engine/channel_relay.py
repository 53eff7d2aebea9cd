"""A channel end whose channel lives on another engine of the cluster: its socket is relayed there.

A worker opens a channel end at its own engine (the SDKs build the address from the engine they are connected to
and the ref's ``channel_id``). When the id names another engine (:func:`iii.engine.cluster.channel_owner`), this
engine accepts the socket, opens the same end (same key, same direction) at the owner, and passes every frame
through unchanged in both directions, the closing handshake's code and reason included. The owner sees an
ordinary channel end; its checks (the key, the direction, an end already taken) apply there, and its close codes
reach the worker as they are.

Backpressure crosses the relay: when one side's outgoing buffer is full, the other side is not read, so a slow
reader on this engine holds back the owner's relay, which holds back the writer. What a relay holds is bounded by
the two sockets' write buffers (:data:`WRITE_BUFFER_HIGH`) and one frame.

Failures are never a clean end: losing the owner (its engine killed, the network) closes the worker's socket with
4001 for a reader (:data:`~iii.protocol.close_codes.WRITER_LOST`) or 4002 for a writer
(:data:`~iii.protocol.close_codes.READER_LOST`); a worker that vanishes without a close frame makes the relay drop
its socket at the owner, which the owner takes as that end lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import quote

from picows import WSFrame, WSInvalidStatusError, WSListener, WSMsgType, WSTransport, ws_connect

from iii.engine.channels import Role
from iii.engine.sockets import TrackedListener, Tracker, linger_close
from iii.protocol import close_codes
from iii.protocol.refs import CHANNEL_PATH_PREFIX

log = logging.getLogger("iii.engine.channels")

WRITE_BUFFER_HIGH: Final = 1024 * 1024
"""Outgoing bytes either socket of a relay may have buffered before the other side is no longer read."""
CONNECT_TIMEOUT_S: Final = 10.0

AddressOf = Callable[[str], Awaitable[str | None]]
"""The address of a live engine of the cluster by id (None if it is not one)."""


class ChannelRelay(TrackedListener):
    """The worker's side of a relayed channel end (see the module docstring)."""

    def __init__(
        self,
        channel_id: str,
        key: str,
        role: Role,
        owner_engine_id: str,
        address_of: AddressOf,
        max_frame_bytes: int,
        tracker: Tracker,
        relays: set[ChannelRelay],
    ) -> None:
        super().__init__(tracker)
        self.channel_id = channel_id
        self.key = key
        self.role = role
        self.owner_engine_id = owner_engine_id
        self._address_of = address_of
        self._max_frame_bytes = max_frame_bytes
        self._relays = relays
        self.transport: WSTransport | None = None
        self.upstream: _Upstream | None = None
        self._closing = False
        """A close frame was sent to the worker (or it sent one): later frames from it are dropped."""
        self._connecting: asyncio.Task[None] | None = None

    # --- the worker's socket ----------------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        self.transport = transport
        self._relays.add(self)
        transport.underlying_transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        transport.underlying_transport.pause_reading()  # until the owner's end is open
        self._connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        try:
            address = await self._address_of(self.owner_engine_id)
        except Exception as error:  # Redis unreachable, and this engine has never linked to the owner
            self.close(self._lost_code, f"the channel's engine cannot be found now: {error}")
            return
        if address is None:
            reason = f"Channel not found: engine {self.owner_engine_id} is not in the cluster"
            self.close(close_codes.POLICY_VIOLATION, reason)
            return
        url = f"{address}{CHANNEL_PATH_PREFIX}{quote(self.channel_id)}?key={quote(self.key)}&dir={self.role.value}"
        try:
            await ws_connect(
                lambda: _Upstream(self),
                url,
                max_frame_size=self._max_frame_bytes,
                websocket_handshake_timeout=CONNECT_TIMEOUT_S,
            )
        except WSInvalidStatusError as refused:
            status = refused.response.status if refused.response is not None else None
            reason = "Channel not found" if status == 404 else f"refused by the channel's engine: {refused}"
            self.close(close_codes.POLICY_VIOLATION, reason)
        except (OSError, TimeoutError) as error:
            log.warning("channel=%s engine %s unreachable: %s", self.channel_id, self.owner_engine_id, error)
            self.close(self._lost_code, f"the channel's engine cannot be reached: {error or type(error).__name__}")
        except Exception as error:  # other handshake failures
            self.close(self._lost_code, f"the channel's engine cannot be reached: {error}")

    @property
    def _lost_code(self) -> int:
        """What losing the owner means to this end: a reader lost its writer, a writer its reader."""
        return close_codes.WRITER_LOST if self.role is Role.READER else close_codes.READER_LOST

    def on_upstream_connected(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        if self.transport is None or self.transport.is_disconnected:
            upstream.transport.disconnect()
            return
        upstream.transport.underlying_transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self.transport.underlying_transport.resume_reading()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            if self._closing:
                transport.disconnect()  # the worker answered our close
                return
            self._closing = True
            code, reason = frame.get_close_code(), frame.get_close_message()
            if self.upstream is not None and not self.upstream.transport.is_close_frame_sent:
                self.upstream.transport.send_close(code, reason)
            transport.send_close(code, reason)
            transport.disconnect()
            return
        if self._closing or self.upstream is None or frame.msg_type in (WSMsgType.PING, WSMsgType.PONG):
            return
        self.upstream.transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)

    def pause_writing(self) -> None:  # the worker's buffer is full: stop reading the owner
        if self.upstream is not None:
            self.upstream.transport.underlying_transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and not self.upstream.transport.is_disconnected:
            self.upstream.transport.underlying_transport.resume_reading()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        super().on_ws_disconnected(transport)
        self._relays.discard(self)
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self.upstream is not None and not self.upstream.transport.is_disconnected:
            self.upstream.transport.disconnect()  # the owner takes it as this end lost, unless it was closed

    def close(self, code: int, reason: str) -> None:
        """Close the worker's socket with ``code`` (and drop the owner's side)."""
        self._closing = True
        if self.transport is not None:
            linger_close(self.transport, code, reason)
        if self.upstream is not None and not self.upstream.transport.is_disconnected:
            self.upstream.transport.disconnect()

    # --- the owner's socket -----------------------------------------------------------------------------

    def on_upstream_frame(self, frame: WSFrame) -> None:
        assert self.transport is not None and self.upstream is not None
        if frame.msg_type is WSMsgType.CLOSE:
            code, reason = frame.get_close_code(), frame.get_close_message()
            upstream = self.upstream.transport
            if not upstream.is_close_frame_sent:
                upstream.send_close(code, reason)
            upstream.disconnect()
            if not self._closing:
                self._closing = True
                linger_close(self.transport, code.value, (reason or b"").decode(errors="replace"))
            return
        if self._closing or frame.msg_type in (WSMsgType.PING, WSMsgType.PONG):
            return
        self.transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)

    def on_upstream_disconnected(self) -> None:
        if not self._closing:
            log.warning("channel=%s lost the link to its engine %s", self.channel_id, self.owner_engine_id)
            self.close(self._lost_code, f"the link to the channel's engine {self.owner_engine_id} was lost")

    def pause_upstream_writing(self) -> None:  # the owner's buffer is full: stop reading the worker
        if self.transport is not None:
            self.transport.underlying_transport.pause_reading()

    def resume_upstream_writing(self) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.underlying_transport.resume_reading()


class _Upstream(WSListener):
    """The relay's socket at the channel's engine."""

    def __init__(self, relay: ChannelRelay) -> None:
        self.relay = relay
        self.transport: WSTransport

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.relay.on_upstream_connected(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.relay.on_upstream_frame(frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.relay.on_upstream_disconnected()

    def pause_writing(self) -> None:
        self.relay.pause_upstream_writing()

    def resume_writing(self) -> None:
        self.relay.resume_upstream_writing()
