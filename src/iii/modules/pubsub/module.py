"""The pub/sub module: the function ``publish`` and the trigger type ``subscribe``, as the reference has them.

``publish`` takes ``{"topic": str, "data": any}`` and answers ``null``; each function bound to the topic with a
``subscribe`` trigger (config ``{"topic": str}``) is then called with ``data`` itself, no envelope. Errors are
the reference's: ``deserialization_error`` for input without a string ``topic`` or without ``data``,
``topic_not_set`` for an empty topic; ours on top: ``publish_failed`` when Redis does not take the message.

Delivery is fire-and-forget for the publisher and bounded per subscriber (:mod:`.delivery`); order between
messages is not promised (several invocations of one subscriber may run at once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from iii.modules.api import BindingInfo, CallInfo, FunctionError, MetricSample, ModuleHost
from iii.modules.backends import Backend, check_backend, uses_redis
from iii.protocol.errors import DESERIALIZATION_ERROR

from .buses import Bus, BusError, LocalBus, RedisBus
from .delivery import Counts, Subscriber

log = logging.getLogger("iii.modules.pubsub")

TOPIC_NOT_SET = "topic_not_set"
PUBLISH_FAILED = "publish_failed"
OTHER_TOPICS = "_other"
"""The ``topic`` label of metrics for topics past ``max_metric_topics``."""

PUBLISH_REQUEST_FORMAT = {
    "type": "object",
    "properties": {"topic": {"type": "string", "minLength": 1}, "data": {}},
    "required": ["topic", "data"],
}


@dataclass(frozen=True, slots=True)
class PubSubSettings:
    redis_url: str | None = None
    backend: Backend = "auto"
    """``auto``: Redis when ``redis_url`` is set, else in this process."""
    channel_prefix: str = ""
    """Redis channel of a topic: prefix + topic (empty: the reference engine's channel names)."""
    queue_size: int = 1024
    """Per subscribed binding: messages waiting behind the invocations in flight; past it they are dropped."""
    max_in_flight: int = 32
    """Per subscribed binding: invocations running at once."""
    invoke_timeout_s: float | None = None
    """How long one delivery may take (None: the host's invocation timeout)."""
    max_metric_topics: int = 1000
    """Topics counted one by one in metrics; the others are summed under the topic ``_other``."""

    def __post_init__(self) -> None:
        check_backend("pubsub", self.backend, self.redis_url)
        if self.queue_size < 0 or self.max_in_flight < 1:
            raise ValueError("pubsub needs queue_size >= 0 and max_in_flight >= 1")

    @property
    def uses_redis(self) -> bool:
        return uses_redis(self.backend, self.redis_url)


class PubSubModule:
    """Topic-based publish/subscribe (see the module docstring)."""

    name = "pubsub"

    def __init__(self, settings: PubSubSettings | None = None) -> None:
        self.settings = settings or PubSubSettings()
        self._host: ModuleHost | None = None
        self._bus: Bus | None = None
        self._topics: dict[str, dict[str, Subscriber]] = {}
        """topic -> binding id -> its subscriber."""
        self._counts: dict[str, Counts] = {}
        """Per topic (at most max_metric_topics, then OTHER_TOPICS)."""

    # --- Module ---------------------------------------------------------------------------------------

    async def start(self, host: ModuleHost) -> None:
        self._host = host
        if self.settings.uses_redis:
            assert self.settings.redis_url is not None
            self._bus = RedisBus(self.settings.redis_url, self._deliver, channel_prefix=self.settings.channel_prefix)
        else:
            self._bus = LocalBus(self._deliver)
        await self._bus.start()
        host.register_function(
            "publish",
            self._publish,
            description="Publish data to every function subscribed to a topic",
            request_format=PUBLISH_REQUEST_FORMAT,
        )
        host.register_trigger_type("subscribe", self, description="Subscribe to a topic")

    async def stop(self) -> None:
        for subscribers in self._topics.values():
            for subscriber in subscribers.values():
                subscriber.close()
        self._topics.clear()
        if self._bus is not None:
            await self._bus.close()

    def metrics(self) -> Iterable[MetricSample]:
        for topic, counts in self._counts.items():
            labels = {"topic": topic}
            yield MetricSample("pubsub_published", counts.published, labels, "Messages published", "counter")
            yield MetricSample("pubsub_delivered", counts.delivered, labels, "Deliveries answered", "counter")
            yield MetricSample("pubsub_failed", counts.failed, labels, "Deliveries answered with an error", "counter")
            dropped_help = "Deliveries dropped: the subscriber's queue was full"
            yield MetricSample("pubsub_dropped", counts.dropped, labels, dropped_help, "counter")
        for topic, subscribers in self._topics.items():
            labels = {"topic": topic}
            yield MetricSample("pubsub_subscribers", len(subscribers), labels, "Subscribed bindings")
            waiting = sum(subscriber.queued for subscriber in subscribers.values())
            yield MetricSample("pubsub_queued", waiting, labels, "Deliveries waiting for a free slot")

    def snapshot(self) -> Mapping[str, Any]:
        assert self._bus is not None, "snapshot before start"
        topics = []
        for topic in sorted(self._topics):
            subscribers = [
                {
                    "binding_id": subscriber.binding_id,
                    "function_id": subscriber.function_id,
                    "in_flight": subscriber.in_flight,
                    "queued": subscriber.queued,
                    "delivered": subscriber.counts.delivered,
                    "failed": subscriber.counts.failed,
                    "dropped": subscriber.counts.dropped,
                }
                for subscriber in self._topics[topic].values()
            ]
            topics.append({"topic": topic, "subscriber_count": len(subscribers), "subscribers": subscribers})
        return {**self._bus.describe(), "topics": topics}

    async def wait_subscribed(self, topic: str, *, session: int = 1) -> None:
        """Return once messages on ``topic`` reach this engine's subscribers (with Redis: once Redis confirmed
        the subscription, in the ``session``-th subscription connection or a later one)."""
        assert self._bus is not None, "wait_subscribed before start"
        await self._bus.wait_subscribed(topic, session)

    async def wait_idle(self) -> None:
        """Return when no delivery is in flight or waiting (those of messages that arrive meanwhile included)."""
        while busy := [s for subscribers in self._topics.values() for s in subscribers.values() if s.in_flight]:
            await asyncio.gather(*(subscriber.wait_idle() for subscriber in busy))

    # --- TriggerProvider ------------------------------------------------------------------------------

    def describe(self, binding_id: str) -> Mapping[str, Any]:
        """What the listings show with a subscribe binding (:class:`~iii.modules.api.DescribingProvider`):
        whether its topic's messages reach this engine yet (on Redis, once the subscription is confirmed)."""
        for topic, subscribers in self._topics.items():
            if binding_id in subscribers:
                return {"subscribed": self._bus is not None and self._bus.is_subscribed(topic)}
        return {}

    def activate(self, binding: BindingInfo) -> str | None:
        topic = binding.config.get("topic")
        if not isinstance(topic, str) or not topic:
            return "a subscribe trigger needs a non-empty string `topic` in its config"
        assert self._host is not None and self._bus is not None, "activate before start"
        host = self._host
        timeout_s = self.settings.invoke_timeout_s

        async def invoke(function_id: str, data: Any) -> Any:
            return await host.invoke(function_id, data, timeout_s=timeout_s)

        subscribers = self._topics.setdefault(topic, {})
        subscribers[binding.binding_id] = Subscriber(
            binding.binding_id,
            topic,
            binding.function_id,
            invoke,
            queue_size=self.settings.queue_size,
            max_in_flight=self.settings.max_in_flight,
            topic_counts=self._counts_for(topic),
        )
        if len(subscribers) == 1:
            self._bus.watch(topic)
        log.info("pubsub: %s subscribed to topic %r", binding.function_id, topic)
        return None

    def deactivate(self, binding: BindingInfo) -> None:
        topic = binding.config.get("topic")
        subscribers = self._topics.get(topic) if isinstance(topic, str) else None
        subscriber = subscribers.pop(binding.binding_id, None) if subscribers is not None else None
        if subscriber is None:
            return
        subscriber.close()
        if not subscribers:
            del self._topics[subscriber.topic]
            if self._bus is not None:
                self._bus.unwatch(subscriber.topic)

    # --- publishing and delivering --------------------------------------------------------------------

    async def _publish(self, data: Any, call: CallInfo) -> None:
        if not isinstance(data, dict):
            raise _bad_input("expected an object with `topic` and `data`")
        for field in ("topic", "data"):
            if field not in data:
                raise _bad_input(f"missing field `{field}`")
        topic = data["topic"]
        if not isinstance(topic, str):
            raise _bad_input("`topic` is not a string")
        if not topic:
            raise FunctionError(TOPIC_NOT_SET, "Topic is not set")
        assert self._bus is not None, "publish before start"
        try:
            await self._bus.publish(topic, data["data"])
        except BusError as error:
            raise FunctionError(PUBLISH_FAILED, str(error)) from error
        self._counts_for(topic).published += 1

    def _deliver(self, topic: str, data: Any) -> None:
        for subscriber in list(self._topics.get(topic, {}).values()):
            subscriber.offer(data)

    def _counts_for(self, topic: str) -> Counts:
        counts = self._counts.get(topic)
        if counts is None:
            if len(self._counts) >= self.settings.max_metric_topics:
                topic = OTHER_TOPICS
            counts = self._counts.setdefault(topic, Counts())
        return counts


def _bad_input(reason: str) -> FunctionError:
    return FunctionError(DESERIALIZATION_ERROR, f"Failed to deserialize input for publish: {reason}")
