"""The engine's stream subscribers: admission, joins and leaves, and the delivery of each change to them.

:class:`StreamSubscribers` is what the subscription port (:mod:`iii.modules.streams.socket`) asks to admit a
client and to run its connection; the module hands it every change and event (:meth:`deliver`), and so does the
Redis relay for the other engines' (:meth:`deliver_encoded`).

* **Admission**: with an auth function (``[stream] auth_function``), it is called before the upgrade with the
  request (``headers``, ``path``, ``query_params``, ``addr``); ``{"context": ...}`` admits the client with that
  context, any other answer or an error refuses it (401), and a function that cannot be called (not registered,
  too slow, its worker gone) turns it away with 503: it fails closed.
* **A join** asks the ``stream:join`` bindings, then holds a place in the connection's queue for the sync and
  subscribes, then reads the group (or item) and fills the place: changes made meanwhile wait behind the sync,
  so the client never sees a change before the state it applies to (one made just before the read may come
  after a sync that has it already: applying it again changes nothing).
* **A change** is encoded once, as a WebSocket frame, and the same bytes are offered to each connection it goes
  to (once per connection, :mod:`iii.modules.streams.subscriptions`). A connection whose queue is full is
  dropped (1013).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from aiohttp import web

from iii.modules.api import FunctionError, InvocationError, ModuleHost
from iii.modules.streams.join_triggers import SubscriberTriggers
from iii.modules.streams.messages import (
    MessageError,
    Target,
    address_of,
    encode,
    parse_client_message,
    sync_message,
    unauthorized_message,
)
from iii.modules.streams.socket import INTERNAL_ERROR, TRY_AGAIN_LATER, Refused, SubscriberConnection, text_frame
from iii.modules.streams.store import StoreError
from iii.modules.streams.subscriptions import SubscriptionTable
from iii.protocol.errors import FUNCTION_NOT_FOUND, INVOCATION_STOPPED, LIMIT_EXCEEDED, TIMEOUT

log = logging.getLogger("iii.modules.streams")

UNAVAILABLE: Final = frozenset((FUNCTION_NOT_FOUND, TIMEOUT, INVOCATION_STOPPED, LIMIT_EXCEEDED))
"""Error codes that say the auth function could not be called (not that it refused): 503."""

Sync = Callable[[Target], Awaitable[Any]]
"""Reads what a join's sync carries: the group's items (a list), or the item (or None)."""


class StreamSubscribers:
    """See the module docstring."""

    def __init__(
        self,
        host: ModuleHost,
        sync: Sync,
        *,
        max_name_bytes: int,
        auth_function: str | None = None,
        auth_timeout_s: float = 10.0,
    ) -> None:
        self._host = host
        self._sync = sync
        self._max_name_bytes = max_name_bytes
        self._auth_function = auth_function
        self._auth_timeout_s = auth_timeout_s
        self.table: SubscriptionTable[SubscriberConnection] = SubscriptionTable()
        self.connections: set[SubscriberConnection] = set()
        self.joins = SubscriberTriggers(host, "stream:join")
        self.leaves = SubscriberTriggers(host, "stream:leave")
        self.dropped = 0
        """Connections dropped for not keeping up."""

    # --- delivery -------------------------------------------------------------------------------------------

    def deliver(self, message: dict[str, Any]) -> bytes:
        """Send a wrapper message to its subscribers; returns its encoding (for the other engines)."""
        data = encode(message)
        self._offer(text_frame(data), message["streamName"], message["groupId"], message["id"])
        return data

    def deliver_encoded(self, data: bytes) -> None:
        """Send an encoded wrapper message (another engine's) to its subscribers here."""
        try:
            address = address_of(data)
        except msgspec.DecodeError as error:
            log.warning("stream: a change from another engine is not a stream message (%s); ignored", error)
            return
        self._offer(text_frame(data), address.streamName, address.groupId, address.id)

    def _offer(self, frame: bytes, stream_name: str, group_id: str, item_id: str | None) -> None:
        for connection in self.table.recipients(stream_name, group_id, item_id):
            if not connection.offer(frame):
                self._drop(connection)

    def _drop(self, connection: SubscriberConnection) -> None:
        waiting = len(connection.queue)
        self.dropped += 1
        log.warning(
            "stream: subscriber %s too slow (%d messages, %d bytes waiting): dropped",
            connection.address,
            waiting,
            connection.queue.bytes,
        )
        connection.close(TRY_AGAIN_LATER, f"subscriber too slow: {waiting} messages waiting")
        self._end_subscriptions(connection)

    # --- admission ----------------------------------------------------------------------------------------

    async def admit(self, request: web.BaseRequest) -> Any:
        """The client's context from the auth function (None without one); :class:`Refused` otherwise."""
        auth = self._auth_function
        if auth is None:
            return None
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""
        auth_input = {
            "headers": {name: value for name, value in request.headers.items()},
            "path": request.path,
            "query_params": {name: request.query.getall(name) for name in request.query},
            "addr": addr,
        }
        try:
            answer = await self._host.invoke(auth, auth_input, timeout_s=self._auth_timeout_s)
        except InvocationError as error:
            if error.code in UNAVAILABLE:
                log.warning(
                    "stream: auth function %s could not be called for a subscriber from %s (%s): 503",
                    auth,
                    addr,
                    error.code,
                )
                raise Refused(503, "the engine cannot authenticate subscribers now; try again later") from None
            log.info("stream: auth function %s refused a subscriber from %s: %s", auth, addr, error.message)
            raise Refused(401, f"refused: {error.message}") from None
        if not isinstance(answer, dict) or "context" not in answer:
            log.warning("stream: auth function %s answered %.200r, not {context}: subscriber refused", auth, answer)
            raise Refused(401, "refused: the auth function did not admit this client")
        return answer["context"]

    # --- one connection ---------------------------------------------------------------------------------------

    async def serve(self, connection: SubscriberConnection, first: Target | None) -> None:
        """Run ``connection``: join ``first`` if given, then its joins and leaves until it ends; then its
        subscriptions end (``stream:leave`` for each)."""
        self.connections.add(connection)
        try:
            if first is not None:
                await self._join(connection, first)
            async for frame in connection.frames():
                if connection.closing:
                    break
                try:
                    message = parse_client_message(frame, self._max_name_bytes)
                except MessageError as error:
                    log.info("stream: subscriber %s sent a bad message: %s", connection.address, error.reason)
                    connection.close(error.code, error.reason)
                    break
                if message.kind == "join":
                    await self._join(connection, message.target)
                else:
                    left = self.table.remove(connection, message.target.subscription_id)
                    if left is not None:
                        self.leaves.tell(left, connection.context)
        finally:
            self._end_subscriptions(connection)
            self.connections.discard(connection)

    def _end_subscriptions(self, connection: SubscriberConnection) -> None:
        for target in self.table.remove_connection(connection):
            self.leaves.tell(target, connection.context)

    async def _join(self, connection: SubscriberConnection, target: Target) -> None:
        if not await self.joins.admits(target, connection.context):
            if not connection.offer(text_frame(unauthorized_message(target))):
                self._drop(connection)
            return
        if connection.closing:
            return
        slot = connection.hold_sync()
        if slot is None:
            self._drop(connection)
            return
        replaced = self.table.add(connection, target)
        if replaced is not None:
            self.leaves.tell(replaced, connection.context)
        try:
            data = await self._sync(target)
        except (FunctionError, StoreError) as error:
            log.warning("stream: sync of %s/%s failed: %s", target.stream_name, target.group_id, error)
            connection.close(INTERNAL_ERROR, f"cannot read {target.stream_name}/{target.group_id} now")
            return
        connection.fill_sync(slot, text_frame(sync_message(target, data)))

    # --- reports --------------------------------------------------------------------------------------------

    async def close(self) -> None:
        await self.joins.close()
        await self.leaves.close()
