"""The queue module: named queues, durable topics, retries with backoff, FIFO groups and dead letters.

Functions (the reference's ids and shapes):

* ``engine::queue::enqueue {queue, function_id, data, messageReceiptId, traceparent?, baggage?}`` -> null: the
  provider of the ``enqueue`` action (the core calls it, :mod:`iii.engine.enqueue`); the message is durable
  when it answers. An unknown queue, or a FIFO message without its group field, is refused.
* ``iii::durable::publish {topic, data}`` -> null: one message per function subscribed to ``topic`` with a
  ``durable:subscriber`` trigger (config ``{topic, queue_config?}``), each in its own queue
  (:func:`~iii.modules.queue.store.topic_queue`): every subscribed function gets every message, and the
  workers serving one function compete for its messages.
* ``iii::queue::redrive {queue}`` -> ``{queue, redriven}``; ``iii::queue::redrive_message`` and
  ``iii::queue::discard_message {queue, message_id}`` -> ``{queue, message_id, redriven}`` (``topic`` may name
  a durable topic instead of ``queue``).
* ``engine::queue::list_topics``, ``engine::queue::topic_stats {topic}``, ``engine::queue::dlq_topics``,
  ``engine::queue::dlq_messages {topic, offset?, limit?}``: the listings of the reference's console.

Deliveries are the dispatchers' (:mod:`.dispatcher`); the messages live in the backend (:mod:`.store`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

from iii.modules.api import BindingInfo, CallInfo, FunctionError, InvocationError, MetricSample, ModuleHost
from iii.modules.queue.dispatcher import Dispatcher, QueueStats, now_ms
from iii.modules.queue.redis_store import RedisQueueStore
from iii.modules.queue.settings import DEFAULT_QUEUE, QueueConfig, QueueSettings
from iii.modules.queue.sqlite_store import SqliteQueueStore
from iii.modules.queue.store import NewMessage, QueueCounts, QueueStore, StoredMessage, StoreError, topic_queue
from iii.modules.redis_urls import redacted
from iii.protocol.codec import decode_value, encode_value
from iii.protocol.errors import DESERIALIZATION_ERROR

log = logging.getLogger("iii.modules.queue")

TRIGGER_TYPE: Final = "durable:subscriber"
QUEUE_NOT_FOUND: Final = "queue_not_found"
MESSAGE_GROUP_MISSING: Final = "message_group_missing"
ENQUEUE_FAILED: Final = "enqueue_failed"
TOPIC_NOT_SET: Final = "topic_not_set"
QUEUE_NOT_SET: Final = "queue_not_set"
MESSAGE_ID_NOT_SET: Final = "message_id_not_set"
TOPIC_REQUIRED: Final = "topic_required"
BROKER_FUNCTION_QUEUE: Final = "function_queue"
"""``broker_type`` of a named queue in the listings (the reference's)."""
_SUBSCRIBER_CONFIG: Final = {"type": "type", "maxRetries": "max_retries", "concurrency": "concurrency"}
_SUBSCRIBER_CONFIG.update({"backoffDelayMs": "backoff_ms", "messageGroupField": "message_group_field"})
"""A binding's ``queue_config`` keys (the reference's camelCase) -> :class:`QueueConfig` fields."""


def _bad_input(message: str) -> FunctionError:
    return FunctionError(DESERIALIZATION_ERROR, message)


def _object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _bad_input(f"expected an object with {what}")
    return data


def _string(data: Mapping[str, Any], *names: str) -> str:
    """The first of ``names`` present and not null (aliases), which must be a string; "" when none is."""
    for name in names:
        if data.get(name) is not None:
            value = data[name]
            if not isinstance(value, str):
                raise _bad_input(f"`{name}` is not a string")
            return value
    return ""


def subscriber_config(config: Mapping[str, Any]) -> QueueConfig:
    """A ``durable:subscriber`` binding's queue settings: the defaults, changed by its ``queue_config`` (``type``,
    ``maxRetries``, ``concurrency``, ``backoffDelayMs``, ``messageGroupField``; others are ignored).
    ``ValueError`` for a bad one."""
    table = config.get("queue_config")
    if table is None:
        return QueueConfig()
    if not isinstance(table, Mapping):
        raise ValueError("queue_config must be an object")
    fields = {ours: table[theirs] for theirs, ours in _SUBSCRIBER_CONFIG.items() if theirs in table}
    return QueueConfig(**fields)


class QueueModule:
    """The queue module (:class:`~iii.modules.api.Module`); see the module docstring."""

    name = "queue"

    def __init__(self, settings: QueueSettings) -> None:
        self.settings = settings
        self.named = settings.named_queues()
        self._store: QueueStore | None = None
        self._host: ModuleHost | None = None
        self._dispatchers: dict[str, Dispatcher] = {}
        self._stats: dict[str, QueueStats] = {}
        self._subscriptions: dict[str, tuple[str, str]] = {}
        """binding id -> (topic, function id)."""
        self._topics: dict[str, dict[str, set[str]]] = {}
        """topic -> subscribed function id -> its binding ids."""
        self._counts: dict[str, QueueCounts] = {}
        self._stats_task: asyncio.Task[None] | None = None
        self._retired: list[Dispatcher] = []
        """Dispatchers of unbound subscriptions that may still be finishing deliveries."""
        self.recovered = 0
        """Messages found leased at start (the engine was stopped mid-delivery) and made ready again."""

    # --- Module ------------------------------------------------------------------------------------

    async def _connect_store(self) -> QueueStore:
        settings = self.settings
        if settings.uses_redis:
            assert settings.redis_url is not None
            redis_store = await RedisQueueStore.open(
                settings.redis_url, prefix=settings.redis_prefix, consumer=settings.consumer_name()
            )
            log.info("queue: redis backend at %s (consumer %s)", redacted(settings.redis_url), settings.consumer_name())
            return redis_store
        sqlite_store = await SqliteQueueStore.open(
            settings.data_dir,
            synchronous=settings.sqlite_synchronous,
            batch_max_writes=settings.sqlite_batch_max_writes,
        )
        log.info("queue: sqlite backend at %s", sqlite_store.describe())
        return sqlite_store

    async def start(self, host: ModuleHost) -> None:
        self._store = await self._connect_store()
        self._host = host
        try:
            self.recovered = await self._store.recover()
        except StoreError:
            await self._store.close()
            raise
        if self.recovered:
            log.info("queue: %d message(s) in flight when the engine stopped are ready again", self.recovered)
        functions = [
            ("engine::queue::enqueue", self._enqueue, "Enqueue a function call (the enqueue action's provider)"),
            ("iii::durable::publish", self._publish, "Enqueue a message"),
            ("iii::queue::redrive", self._redrive, "Redrive all DLQ messages back to the main queue"),
            ("iii::queue::redrive_message", self._redrive_message, "Redrive a single DLQ message by ID"),
            ("iii::queue::discard_message", self._discard_message, "Discard (purge) a single DLQ message by ID"),
            ("engine::queue::list_topics", self._list_topics, "List all queue topics"),
            ("engine::queue::topic_stats", self._topic_stats, "Get stats for a queue topic"),
            ("engine::queue::dlq_topics", self._dlq_topics, "List DLQ topics with counts"),
            ("engine::queue::dlq_messages", self._dlq_messages, "Browse DLQ messages"),
        ]
        for function_id, handler, description in functions:
            host.register_function(function_id, handler, description=description)
        host.register_trigger_type(TRIGGER_TYPE, self, description="Durable topic subscription")
        for queue, config in self.named.items():
            self._start_dispatcher(queue, config)
        await self.refresh_stats()
        self._stats_task = asyncio.get_running_loop().create_task(self._refresh_periodically())

    async def stop(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
            self._stats_task = None
        dispatchers = [*self._dispatchers.values(), *self._retired]
        self._dispatchers, self._retired = {}, []
        await asyncio.gather(*(dispatcher.stop(cancel=True) for dispatcher in dispatchers))
        if self._store is not None:
            await self._store.close()  # the settlements already submitted are committed first
            self._store = None

    def metrics(self) -> Iterable[MetricSample]:
        counters = [
            ("enqueued", "Messages enqueued (or published to a subscribed function)"),
            ("delivered", "Deliveries acknowledged (the function answered a result)"),
            ("retried", "Failed deliveries retried after their backoff"),
            ("released", "Deliveries given back at once because their worker went away"),
            ("dead", "Messages sent to the dead letters"),
        ]
        for queue, stats in sorted(self._stats.items()):
            for name, help_text in counters:
                yield MetricSample(
                    f"queue_{name}", getattr(stats, name), {"queue": queue}, help=help_text, kind="counter"
                )
            yield MetricSample("queue_in_flight", stats.in_flight, {"queue": queue}, help="Deliveries in flight")
        for queue, counts in sorted(self._counts.items()):
            yield MetricSample("queue_depth", counts.ready, {"queue": queue}, help="Messages waiting")
            yield MetricSample("queue_dead_letters", counts.dead, {"queue": queue}, help="Messages in the DLQ")
        if isinstance(self._store, SqliteQueueStore):
            for counter, value in sorted(self._store.counters().items()):
                yield MetricSample(
                    f"queue_sqlite_{counter}", value, help=f"The sqlite backend's {counter}", kind="counter"
                )

    def snapshot(self) -> Mapping[str, Any]:
        names = sorted(set(self.named) | set(self._counts) | set(self._stats))
        queues = []
        for queue in names:
            counts = self._counts.get(queue, QueueCounts(0, 0, 0))
            stats = self._stats.get(queue, QueueStats())
            queues.append(
                {
                    "queue": queue,
                    "depth": counts.ready,
                    "in_flight": stats.in_flight,
                    "dead": counts.dead,
                    "delivered": stats.delivered,
                    "retried": stats.retried,
                }
            )
        return {
            "backend": self._store.kind if self._store is not None else "sqlite",
            "location": self._store.describe() if isinstance(self._store, SqliteQueueStore) else None,
            "queues": queues,
            "topics": {topic: sorted(functions) for topic, functions in sorted(self._topics.items())},
        }

    async def refresh_stats(self) -> None:
        """Read the depths from the backend, and make ready the messages whose lease ran out."""
        store = self._open_store()
        try:
            reclaimed = await store.reclaim(now_ms())
            self._counts = await store.queues()
        except StoreError as error:
            log.warning("queue: could not read the queues: %s", error)
            return
        if reclaimed:
            log.warning("queue: %d message(s) whose lease ran out are ready again", reclaimed)
            for dispatcher in self._dispatchers.values():
                dispatcher.wake()

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stats_interval_s)
            await self.refresh_stats()

    # --- dispatchers -------------------------------------------------------------------------------

    def _start_dispatcher(self, queue: str, config: QueueConfig) -> None:
        dispatcher = Dispatcher(
            queue,
            config,
            self._open_store(),
            self._invoke,
            self._stats.setdefault(queue, QueueStats()),
            poll_interval_s=self.settings.poll_interval_ms / 1000,
            lease_ms=int(self.settings.lease_s * 1000),
        )
        self._dispatchers[queue] = dispatcher
        dispatcher.start()

    async def _invoke(self, message: StoredMessage) -> Any:
        assert self._host is not None
        # The delivery's span (the reference's ``fn_queue <queue>``) is a child of the enqueue's (the message's
        # trace context), and the call's is a child of the delivery's; baggage passes as it was enqueued.
        attributes = [
            ("function_id", message.function_id),
            ("queue", message.queue),
            ("attempt", str(message.attempts + 1)),
            ("delivery_id", message.message_id),
            ("messaging.system", "iii-queue"),
            ("messaging.destination.name", message.queue),
            ("messaging.operation.type", "process"),
        ]
        span = self._host.start_span(f"fn_queue {message.queue}", message.traceparent, attributes)
        traceparent = message.traceparent if span is None else span.traceparent
        try:
            result = await self._host.invoke(
                message.function_id, decode_value(message.data), traceparent=traceparent, baggage=message.baggage
            )
        except InvocationError as error:
            if span is not None:
                span.end((error.code, error.message))
            raise
        except BaseException:
            if span is not None:
                span.end(("invocation_stopped", "the delivery was stopped"))
            raise
        if span is not None:
            span.end()
        return result

    def _open_store(self) -> QueueStore:
        if self._store is None:
            raise StoreError("the queue module is not started")
        return self._store

    async def _add(self, messages: list[NewMessage]) -> None:
        """Store the messages (durably), then wake their queues' dispatchers."""
        await self._open_store().add(messages)
        for message in messages:
            self._stats.setdefault(message.queue, QueueStats()).enqueued += 1
            dispatcher = self._dispatchers.get(message.queue)
            if dispatcher is not None:
                dispatcher.wake()

    # --- durable:subscriber ------------------------------------------------------------------------

    def activate(self, binding: BindingInfo) -> str | None:
        topic = binding.config.get("topic")
        if not isinstance(topic, str) or not topic:
            return "a durable:subscriber trigger needs a non-empty string `topic` in its config"
        try:
            config = subscriber_config(binding.config)
        except (TypeError, ValueError) as error:
            return f"durable:subscriber queue_config: {error}"
        self._subscriptions[binding.binding_id] = (topic, binding.function_id)
        functions = self._topics.setdefault(topic, {})
        bindings = functions.setdefault(binding.function_id, set())
        bindings.add(binding.binding_id)
        queue = topic_queue(topic, binding.function_id)
        if queue not in self._dispatchers:
            self._start_dispatcher(queue, config)
        log.info("queue: %s subscribed to durable topic %r", binding.function_id, topic)
        return None

    def deactivate(self, binding: BindingInfo) -> None:
        found = self._subscriptions.pop(binding.binding_id, None)
        if found is None:
            return
        topic, function_id = found
        functions = self._topics.get(topic, {})
        bindings = functions.get(function_id, set())
        bindings.discard(binding.binding_id)
        if bindings:
            return
        functions.pop(function_id, None)
        if not functions:
            self._topics.pop(topic, None)
        dispatcher = self._dispatchers.pop(topic_queue(topic, function_id), None)
        if dispatcher is not None:  # its messages stay stored, for the next subscription
            dispatcher.halt()
            self._retired = [retired for retired in self._retired if retired.delivering]
            self._retired.append(dispatcher)

    # --- functions ---------------------------------------------------------------------------------

    async def _enqueue(self, data: Any, call: CallInfo) -> None:
        request = _object(data, "`queue`, `function_id` and `data`")
        queue = _string(request, "queue")
        function_id = _string(request, "function_id")
        receipt = _string(request, "messageReceiptId") or str(uuid.uuid4())
        if not function_id:
            raise _bad_input("missing field `function_id`")
        config = self.named.get(queue)
        if config is None:
            known = ", ".join(sorted(self.named))
            raise FunctionError(
                QUEUE_NOT_FOUND, f"Queue '{queue}' not found (configured: {known}; add it under [queue.queue_configs])"
            )
        payload = request.get("data")
        group = None
        if config.fifo:
            field = config.message_group_field
            assert field is not None  # QueueConfig checks it
            value = payload.get(field) if isinstance(payload, dict) else None
            if value is None:
                raise FunctionError(
                    MESSAGE_GROUP_MISSING,
                    f"FIFO queue '{queue}' requires a non-null field '{field}' in the data (the message group)",
                )
            group = value if isinstance(value, str) else encode_value(value).decode()
        message = NewMessage(
            message_id=receipt,
            queue=queue,
            function_id=function_id,
            data=encode_value(payload),
            group=group,
            traceparent=_string(request, "traceparent") or None,
            baggage=_string(request, "baggage") or None,
        )
        try:
            await self._add([message])
        except StoreError as error:
            raise FunctionError(ENQUEUE_FAILED, f"Failed to enqueue to queue '{queue}': {error}") from error

    async def _publish(self, data: Any, call: CallInfo) -> None:
        request = _object(data, "`topic` and `data`")
        for name in ("topic", "data"):
            if name not in request:
                raise _bad_input(f"missing field `{name}`")
        topic = _string(request, "topic")
        if not topic:
            raise FunctionError(TOPIC_NOT_SET, "Topic is not set")
        encoded = encode_value(request["data"])
        messages = [
            NewMessage(str(uuid.uuid4()), topic_queue(topic, function_id), function_id, encoded)
            for function_id in sorted(self._topics.get(topic, {}))
        ]
        if messages:
            try:
                await self._add(messages)
            except StoreError as error:
                raise FunctionError(ENQUEUE_FAILED, f"Failed to publish to topic '{topic}': {error}") from error

    def _resolve(self, name: str) -> list[str]:
        """The queues a name means: a named queue, or every queue of the durable topic ``name``."""
        if name in self.named:
            return [name]
        prefix = topic_queue(name, "")
        queues = {topic_queue(name, function_id) for function_id in self._topics.get(name, {})}
        queues.update(queue for queue in self._counts if queue.startswith(prefix))
        return sorted(queues)

    async def _redrive(self, data: Any, call: CallInfo) -> Any:
        request = _object(data, "`queue`")
        name = _string(request, "queue", "topic")
        if not name:
            raise FunctionError(QUEUE_NOT_SET, "Queue name is required")
        try:
            redriven = sum([await self._open_store().redrive(queue) for queue in self._resolve(name)])
        except StoreError as error:
            raise FunctionError("redrive_failed", f"Failed to redrive DLQ for queue '{name}': {error}") from error
        self._wake(name)
        return {"queue": name, "redriven": redriven}

    async def _redrive_message(self, data: Any, call: CallInfo) -> Any:
        return await self._one_dead_message(data, redrive=True)

    async def _discard_message(self, data: Any, call: CallInfo) -> Any:
        return await self._one_dead_message(data, redrive=False)

    async def _one_dead_message(self, data: Any, *, redrive: bool) -> Any:
        request = _object(data, "`queue` and `message_id`")
        name = _string(request, "queue", "topic")
        message_id = _string(request, "message_id")
        if not name:
            raise FunctionError(QUEUE_NOT_SET, "Queue name is required")
        if not message_id:
            raise FunctionError(MESSAGE_ID_NOT_SET, "Message ID is required")
        store = self._open_store()
        found = False
        try:
            for queue in self._resolve(name):
                if redrive:
                    found = await store.redrive_message(queue, message_id)
                else:
                    found = await store.discard(queue, message_id)
                if found:
                    break
        except StoreError as error:
            code = "redrive_message_failed" if redrive else "discard_message_failed"
            raise FunctionError(code, f"Failed on DLQ message '{message_id}' of '{name}': {error}") from error
        if redrive and found:
            self._wake(name)
        return {"queue": name, "message_id": message_id, "redriven": 1 if found else 0}

    def _wake(self, name: str) -> None:
        for queue in self._resolve(name):
            dispatcher = self._dispatchers.get(queue)
            if dispatcher is not None:
                dispatcher.wake()

    async def _inspected(self, data: Any) -> tuple[dict[str, Any], str]:
        """A listing's request and the queue or topic it names (``topic``, or ``queue``), with the counts read."""
        request = _object(data, "`topic`")
        name = _string(request, "topic", "queue")
        if not name:
            raise FunctionError(TOPIC_REQUIRED, "topic is required")
        await self.refresh_stats()
        return request, name

    async def _list_topics(self, data: Any, call: CallInfo) -> Any:
        await self.refresh_stats()
        kind = self._open_store().kind
        topics: list[dict[str, Any]] = [
            {"name": name, "broker_type": BROKER_FUNCTION_QUEUE, "subscriber_count": config.concurrency}
            for name, config in sorted(self.named.items())
        ]
        topics.extend(
            {"name": topic, "broker_type": kind, "subscriber_count": len(functions)}
            for topic, functions in sorted(self._topics.items())
        )
        return topics

    async def _topic_stats(self, data: Any, call: CallInfo) -> Any:
        _, name = await self._inspected(data)
        queues = self._resolve(name)
        counts = [self._counts.get(queue, QueueCounts(0, 0, 0)) for queue in queues]
        config = self.named.get(name)
        return {
            "depth": sum(count.ready for count in counts),
            "in_flight": sum(count.leased for count in counts),
            "consumer_count": config.concurrency if config is not None else len(self._topics.get(name, {})),
            "dlq_depth": sum(count.dead for count in counts),
            "config": config.as_json() if config is not None else None,
        }

    async def _dlq_topics(self, data: Any, call: CallInfo) -> Any:
        await self.refresh_stats()
        kind = self._open_store().kind
        found: list[dict[str, Any]] = []
        for topic in sorted(self._topics):
            dead = sum(self._counts.get(queue, QueueCounts(0, 0, 0)).dead for queue in self._resolve(topic))
            found.append({"topic": topic, "broker_type": kind, "message_count": dead})
        for name in sorted(self.named):
            dead = self._counts.get(name, QueueCounts(0, 0, 0)).dead
            found.append({"topic": name, "broker_type": BROKER_FUNCTION_QUEUE, "message_count": dead})
        return found

    async def _dlq_messages(self, data: Any, call: CallInfo) -> Any:
        request, name = await self._inspected(data)
        offset, limit = request.get("offset", 0), request.get("limit", 50)
        if not isinstance(offset, int) or not isinstance(limit, int) or offset < 0 or limit < 0:
            raise _bad_input("`offset` and `limit` must be integers >= 0")
        store = self._open_store()
        found: list[StoredMessage] = []
        try:
            for queue in self._resolve(name):
                found.extend(await store.dead(queue, offset + limit))
        except StoreError as error:
            raise FunctionError("dlq_messages_failed", f"Failed to browse DLQ messages: {error}") from error
        found.sort(key=lambda message: -_failed_at(message))
        return [_dead_json(message) for message in found[offset : offset + limit]]


def _failed_at(message: StoredMessage) -> int:
    error = message.last_error or {}
    value = error.get("failed_at")
    return value if isinstance(value, int) else 0


def _dead_json(message: StoredMessage) -> dict[str, Any]:
    """A dead message as the reference's console lists it (and its function and last error's code, ours)."""
    error = message.last_error or {}
    return {
        "id": message.message_id,
        "payload": decode_value(message.data),
        "error": str(error.get("message", "")),
        "error_code": error.get("code"),
        "function_id": message.function_id,
        "failed_at": _failed_at(message),
        "retries": message.attempts,
        "size_bytes": len(message.data),
    }


__all__ = ["DEFAULT_QUEUE", "TRIGGER_TYPE", "QueueModule"]
