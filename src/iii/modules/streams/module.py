"""The streams module: ``stream::*`` functions over a backend, and the ``stream`` trigger type.

Items live under ``stream_name > group_id > item_id``. Functions (the reference engine's names, payloads and
results):

* ``stream::set {stream_name, group_id, item_id, data}`` -> ``{"old_value", "new_value"}`` (``old_value``
  null when created).
* ``stream::get {stream_name, group_id, item_id}`` -> the item, or null when absent.
* ``stream::delete {stream_name, group_id, item_id}`` -> ``{"old_value"}`` (null when there was none).
* ``stream::update {stream_name, group_id, item_id, ops}`` -> ``{"old_value", "new_value", "errors"?}``, the
  ops (those of ``state::update``, :mod:`iii.modules.state.ops`) applied in order and atomically.
* ``stream::list {stream_name, group_id}`` -> the group's items (a list), in item id order.
* ``stream::list_groups {stream_name}`` -> the ids of the stream's non-empty groups (a list), sorted.
* ``stream::list_all {}`` -> ``{"stream": [{"id", "groups"}], "count"}``, every stream holding an item.
* ``stream::send {stream_name, group_id, type, data, id?}`` -> null: an event for the group's subscribers,
  not stored.

Each change (and each event) fires the ``stream`` triggers (:mod:`iii.modules.streams.triggers`) and is
queued for the group's subscribers (:mod:`iii.modules.streams.subscribers`, on the subscription port of
:mod:`iii.modules.streams.socket`; with Redis, the other engines' subscribers too,
:mod:`iii.modules.streams.relay`) before it is answered; deleting an absent item changes nothing and fires
nothing. The ``stream:join`` / ``stream:leave`` trigger types (:mod:`iii.modules.streams.join_triggers`) are
told of subscribers.

Custom streams (the reference's, made by the SDKs' deprecated ``create_stream``): when a worker serves
``stream::<op>(<stream_name>)`` (e.g. ``stream::get(todos)``), ``stream::<op>`` on that stream calls it
instead of the backend, with the same payload, and answers its result (set, update and delete still fire
the triggers from that result). ``list_all`` and ``send`` have no custom form.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

from iii.modules.api import FunctionError, InvocationError, MetricSample, ModuleHost
from iii.modules.state.ops import MISSING, apply_ops
from iii.modules.state.serving import counted_handler
from iii.modules.streams.console import console_view
from iii.modules.streams.errors import DESERIALIZATION_ERROR, FAILED, VALUE_TOO_LARGE
from iii.modules.streams.join_triggers import JOIN, LEAVE
from iii.modules.streams.messages import Target
from iii.modules.streams.relay import RedisRelay
from iii.modules.streams.requests import ItemAddress, Parser
from iii.modules.streams.settings import StreamsSettings
from iii.modules.streams.socket import Limits, SubscriberServer
from iii.modules.streams.store import Entry, StoreError, StreamStore, decode, encode, open_stream_store
from iii.modules.streams.subscribers import StreamSubscribers
from iii.modules.streams.triggers import (
    CREATE,
    DELETE,
    TRIGGER_TYPE,
    UPDATE,
    StreamTriggers,
    change_event,
    send_event,
)
from iii.protocol.errors import FUNCTION_NOT_FOUND

log = logging.getLogger("iii.modules.streams")

_FAILURE_MESSAGES: Final = {
    "stream::set": "Failed to set value",
    "stream::get": "Failed to get value",
    "stream::delete": "Failed to delete value",
    "stream::update": "Failed to update value",
    "stream::list": "Failed to get group",
    "stream::list_groups": "Failed to list groups",
    "stream::list_all": "Failed to list stream",
    "stream::send": "Failed to send event",
}
_NOT_CUSTOM: Final = object()
"""What :meth:`StreamsModule._custom` returns when the stream has no custom function for the operation."""


class StreamsModule:
    """The streams module (:class:`~iii.modules.api.Module`); see the module docstring."""

    name = "stream"

    def __init__(self, settings: StreamsSettings) -> None:
        self.settings = settings
        self._parser = Parser(settings.max_name_bytes)
        self._store: StreamStore | None = None
        self._host: ModuleHost | None = None
        self._triggers: StreamTriggers | None = None
        self._subscribers: StreamSubscribers | None = None
        self._server: SubscriberServer | None = None
        self._relay: RedisRelay | None = None
        self._operations: Counter[tuple[str, str]] = Counter()
        """(function id, outcome ``ok`` / ``refused`` / ``failed``) -> calls."""

    # --- Module ------------------------------------------------------------------------------------

    async def start(self, host: ModuleHost) -> None:
        self._store = await open_stream_store(self.settings)
        self._host = host
        log.info("stream: %s backend at %s", self._store.kind, self._store.describe())
        self._triggers = StreamTriggers(
            host, enabled=self.settings.triggers_enabled, max_waiting=self.settings.trigger_max_waiting
        )
        host.register_trigger_type(TRIGGER_TYPE, self._triggers, description="Stream trigger")
        functions: list[tuple[str, Callable[[Any], Awaitable[Any]], str]] = [
            ("stream::set", self._set, "Set a value in a stream"),
            ("stream::get", self._get, "Get a value from a stream"),
            ("stream::delete", self._delete, "Delete a value from a stream"),
            ("stream::update", self._update, "Atomically update a stream value with multiple operations"),
            ("stream::list", self._list, "List all items in a stream group"),
            ("stream::list_groups", self._list_groups, "List all groups in a stream"),
            ("stream::list_all", self._list_all, "List all available stream with metadata"),
            ("stream::send", self._send, "Send a custom event to stream subscribers"),
        ]
        for function_id, run, description in functions:
            host.register_function(
                function_id,
                counted_handler(
                    function_id, run, self._operations, (FAILED[function_id], _FAILURE_MESSAGES[function_id]), log
                ),
                description=description,
            )
        settings = self.settings
        self._subscribers = subscribers = StreamSubscribers(
            host,
            self._read_for_sync,
            max_name_bytes=settings.max_name_bytes,
            auth_function=settings.auth_function,
            auth_timeout_s=settings.auth_timeout_s,
        )
        host.register_trigger_type(JOIN, subscribers.joins, description="A client joins a stream subscription")
        host.register_trigger_type(LEAVE, subscribers.leaves, description="A client leaves a stream subscription")
        if settings.port >= 0:
            limits = Limits(
                settings.subscriber_queue_messages,
                settings.subscriber_queue_bytes,
                settings.subscriber_max_message_bytes,
                settings.subscriber_heartbeat_s,
            )
            self._server = SubscriberServer(subscribers, limits)
            await self._server.listen(settings.host, settings.port)
            log.info("module=stream serves subscribers on %s", self._server.url)
        if settings.redis_url:
            self._relay = RedisRelay(
                settings.redis_url, f"{settings.redis_key_prefix}changes", subscribers.deliver_encoded
            )
            await self._relay.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
        if self._subscribers is not None:
            await self._subscribers.close()
        if self._relay is not None:
            await self._relay.close()
        if self._store is not None:
            await self._store.close()  # the writes already submitted are committed first
        if self._triggers is not None:
            await self._triggers.close()

    def metrics(self) -> Iterable[MetricSample]:
        for (function_id, outcome), count in sorted(self._operations.items()):
            yield MetricSample(
                "stream_operations",
                count,
                {"function": function_id, "outcome": outcome},
                help="stream::* calls by function and outcome (ok, refused: a bad request, failed: the backend)",
                kind="counter",
            )
        if self._triggers is not None:
            yield from self._triggers.metrics()

        subscribers, server = self._subscribers, self._server
        if subscribers is not None and server is not None:
            yield MetricSample("stream_subscribers", len(subscribers.connections), help="Open subscriber connections")
            yield MetricSample("stream_subscriptions", subscribers.table.count, help="Subscriptions of the subscribers")
            yield MetricSample(
                "stream_subscriber_messages", server.counts.sent, help="Messages sent to subscribers", kind="counter"
            )
            yield MetricSample(
                "stream_subscribers_dropped",
                subscribers.dropped,
                help="Subscribers dropped (close 1013) for not keeping up",
                kind="counter",
            )
        relay = self._relay
        if relay is not None:
            relayed = {"published": relay.published, "received": relay.received, "lost": relay.lost}
            for outcome, value in relayed.items():
                yield MetricSample(
                    "stream_relay_messages",
                    value,
                    {"outcome": outcome},
                    help="Changes relayed through Redis to the other engines' subscribers (published, received from "
                    "other engines, lost: not published, Redis not keeping up)",
                    kind="counter",
                )

    def snapshot(self) -> Mapping[str, Any]:
        operations: dict[str, dict[str, int]] = {}
        for (function_id, outcome), count in sorted(self._operations.items()):
            operations.setdefault(function_id, {})[outcome] = count
        return {
            "backend": self._store.kind if self._store is not None else self.settings.resolved_backend,
            "location": self._store.describe() if self._store is not None else None,
            "operations": operations,
            "subscriber_url": self._server.url if self._server is not None else None,
            "subscribers": len(self._subscribers.connections) if self._subscribers is not None else 0,
            "triggers": {
                "bindings": self._triggers.binding_count if self._triggers is not None else 0,
                "delivered": self._triggers.delivered if self._triggers is not None else 0,
                "failed": self._triggers.failed if self._triggers is not None else 0,
            },
        }

    @property
    def url(self) -> str:
        """The subscription port's ``ws://host:port`` (the module must be started with a port)."""
        assert self._server is not None, "the stream module serves no subscription port"
        return self._server.url

    async def console_query(self, query: Any) -> Any:
        """The console's Streams view (:class:`~iii.modules.api.ConsoleQueries`; :mod:`.console`)."""
        return await console_view(self._open_store(), self.settings, query)

    async def settle_triggers(self) -> None:
        """Wait until the trigger calls of the changes answered so far are done (for tests and tools)."""
        if self._triggers is not None:
            await self._triggers.settle()

    # --- serving -----------------------------------------------------------------------------------

    def _open_store(self) -> StreamStore:
        if self._store is None:
            raise StoreError("the stream module is not started")
        return self._store

    async def _custom(self, operation: str, stream_name: str, payload: dict[str, Any]) -> Any:
        """The result of the stream's custom ``stream::<operation>(<stream_name>)``, or ``_NOT_CUSTOM``."""
        assert self._host is not None
        custom_id = f"stream::{operation}({stream_name})"
        try:
            return await self._host.invoke(custom_id, payload)
        except InvocationError as error:
            if error.code == FUNCTION_NOT_FOUND:
                return _NOT_CUSTOM
            function_id = f"stream::{operation}"
            raise FunctionError(
                FAILED[function_id], f"{_FAILURE_MESSAGES[function_id]}: {custom_id} failed: {error}"
            ) from None

    def _encode(self, value: Any, function_id: str) -> bytes:
        try:
            encoded = encode(value)
        except (TypeError, ValueError) as error:  # e.g. a string holding a lone surrogate
            raise FunctionError(DESERIALIZATION_ERROR, f"{function_id}: the value cannot be stored: {error}") from None
        if len(encoded) > self.settings.max_value_bytes:
            raise FunctionError(
                VALUE_TOO_LARGE,
                f"value of {len(encoded)} bytes exceeds the configured max_value_bytes limit of "
                f"{self.settings.max_value_bytes}",
            )
        return encoded

    def _fire_change(self, address: ItemAddress, kind: str, data: Any) -> None:
        group = address.group
        self._publish(change_event(group.stream_name, group.group_id, address.item_id, kind, data))

    def _publish(self, message: dict[str, Any]) -> None:
        """Fire the triggers of a change or event, and queue it for its subscribers."""
        assert self._triggers is not None and self._subscribers is not None
        self._triggers.fire(message)
        encoded = self._subscribers.deliver(message)
        if self._relay is not None:
            self._relay.publish(encoded)

    async def _read_for_sync(self, target: Target) -> Any:
        """What a join's sync carries: the group's items (as ``stream::list``), or the item (as ``stream::get``)."""
        group = {"stream_name": target.stream_name, "group_id": target.group_id}
        if target.item_id is None:
            return await self._list(group)
        return await self._get({**group, "item_id": target.item_id})

    @staticmethod
    def _item_payload(address: ItemAddress, **more: Any) -> dict[str, Any]:
        group = address.group
        return {"stream_name": group.stream_name, "group_id": group.group_id, "item_id": address.item_id, **more}

    @staticmethod
    def _result_object(result: Any, function_id: str) -> dict[str, Any]:
        if not isinstance(result, dict) or ("new_value" not in result and function_id != "stream::delete"):
            raise FunctionError(
                FAILED[function_id], f"{_FAILURE_MESSAGES[function_id]}: the custom stream answered {result!r}"
            )
        return result

    async def _set(self, data: Any) -> Any:
        request = self._parser.set(data)
        address = request.address
        custom = await self._custom("set", address.group.stream_name, self._item_payload(address, data=request.data))
        if custom is not _NOT_CUSTOM:
            result = self._result_object(custom, "stream::set")
            kind = UPDATE if result.get("old_value") is not None else CREATE
            self._fire_change(address, kind, result["new_value"])
            return result
        encoded = self._encode(request.data, "stream::set")
        applied = await self._open_store().put(address.group, address.item_id, encoded)
        old_value = decode(applied.old.value) if applied.old is not None else None
        self._fire_change(address, UPDATE if applied.old is not None else CREATE, request.data)
        return {"old_value": old_value, "new_value": request.data}

    async def _get(self, data: Any) -> Any:
        address = self._parser.item(data, "stream::get")
        custom = await self._custom("get", address.group.stream_name, self._item_payload(address))
        if custom is not _NOT_CUSTOM:
            return custom
        entry = await self._open_store().get(address.group, address.item_id)
        return decode(entry.value) if entry is not None else None

    async def _delete(self, data: Any) -> Any:
        address = self._parser.item(data, "stream::delete")
        custom = await self._custom("delete", address.group.stream_name, self._item_payload(address))
        if custom is not _NOT_CUSTOM:
            result = self._result_object(custom, "stream::delete")
            if result.get("old_value") is not None:
                self._fire_change(address, DELETE, result["old_value"])
            return result

        def change(current: Entry | None) -> tuple[None, None]:
            return None, None

        applied = await self._open_store().mutate(address.group, address.item_id, change)
        if applied.old is None:
            return {"old_value": None}
        old_value = decode(applied.old.value)
        self._fire_change(address, DELETE, old_value)
        return {"old_value": old_value}

    async def _update(self, data: Any) -> Any:
        request = self._parser.update(data)
        address = request.address
        custom = await self._custom("update", address.group.stream_name, self._item_payload(address, ops=data["ops"]))
        if custom is not _NOT_CUSTOM:
            answered = self._result_object(custom, "stream::update")
            kind = UPDATE if answered.get("old_value") is not None else CREATE
            self._fire_change(address, kind, answered["new_value"])
            return answered

        def change(current: Entry | None) -> tuple[bytes, tuple[Any, Any, list[dict[str, Any]]]]:
            old = decode(current.value) if current is not None else MISSING
            working = decode(current.value) if current is not None else MISSING  # apply_ops changes it in place
            new, errors = apply_ops(working, request.ops)
            return self._encode(new, "stream::update"), (old, new, errors)

        applied = await self._open_store().mutate(address.group, address.item_id, change)
        old, new, errors = applied.outcome
        old_value = None if old is MISSING else old
        self._fire_change(address, UPDATE if applied.old is not None else CREATE, new)
        result: dict[str, Any] = {"old_value": old_value, "new_value": new}
        if errors:
            result["errors"] = errors
        return result

    async def _list(self, data: Any) -> Any:
        group = self._parser.group(data, "stream::list")
        payload = {"stream_name": group.stream_name, "group_id": group.group_id}
        custom = await self._custom("list", group.stream_name, payload)
        if custom is not _NOT_CUSTOM:
            return custom
        return [decode(value) for value in await self._open_store().items(group)]

    async def _list_groups(self, data: Any) -> Any:
        stream_name = self._parser.stream(data, "stream::list_groups")
        custom = await self._custom("list_groups", stream_name, {"stream_name": stream_name})
        if custom is not _NOT_CUSTOM:
            return custom
        return await self._open_store().groups(stream_name)

    async def _list_all(self, data: Any) -> Any:
        streams = await self._open_store().streams()
        return {"stream": [{"id": name, "groups": groups} for name, groups in streams.items()], "count": len(streams)}

    async def _send(self, data: Any) -> Any:
        request = self._parser.send(data)
        group = request.group
        self._publish(send_event(group.stream_name, group.group_id, request.id, request.event_type, request.data))
        return None
