"""The pub/sub module in one process: the reference's shapes, fan-out, refusals, and bounded deliveries."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from iii.modules.api import MetricSample
from tests.modules.inbox import Inbox
from tests.modules.pubsub.conftest import StartPubSub


def _metric(samples: list[MetricSample], name: str, topic: str) -> float:
    values = [sample.value for sample in samples if sample.name == name and sample.labels == {"topic": topic}]
    assert len(values) == 1, f"{name}{{topic={topic}}}: {values}"
    return values[0]


async def test_every_subscriber_gets_the_data_alone_and_publish_answers_null(start_pubsub: StartPubSub) -> None:
    module, host = await start_pubsub()
    first, second, other = Inbox(), Inbox(), Inbox()
    host.serve("orders::audit", first)
    host.serve("orders::mail", second)
    host.serve("billing::watch", other)
    for function_id, topic in [("orders::audit", "orders"), ("orders::mail", "orders"), ("billing::watch", "billing")]:
        _, refusal = host.bind("subscribe", function_id, {"topic": topic})
        assert refusal is None

    result = await host.call("publish", {"topic": "orders", "data": {"id": 7}, "_caller_worker_id": "w1"})

    assert result is None
    assert await first.wait(1) == [{"id": 7}]
    assert await second.wait(1) == [{"id": 7}]
    await module.wait_idle()
    assert other.received == []
    assert _metric(list(module.metrics()), "pubsub_published", "orders") == 1
    assert _metric(list(module.metrics()), "pubsub_delivered", "orders") == 2


async def test_any_json_value_is_delivered_as_is(start_pubsub: StartPubSub) -> None:
    _, host = await start_pubsub()
    inbox = Inbox()
    host.serve("f", inbox)
    host.bind("subscribe", "f", {"topic": "t"})
    for value in [None, 3, "text", [1, {"a": None}]]:
        await host.call("publish", {"topic": "t", "data": value})
    assert await inbox.wait(4) == [None, 3, "text", [1, {"a": None}]]


@pytest.mark.parametrize(
    ("payload", "code", "message"),
    [
        ({"data": 1}, "deserialization_error", "missing field `topic`"),
        ({"topic": "t"}, "deserialization_error", "missing field `data`"),
        ({"topic": 5, "data": 1}, "deserialization_error", "`topic` is not a string"),
        ("t", "deserialization_error", "expected an object"),
        ({"topic": "", "data": 1}, "topic_not_set", "Topic is not set"),
    ],
)
async def test_bad_publications_get_the_reference_errors(
    start_pubsub: StartPubSub, payload: Any, code: str, message: str
) -> None:
    module, host = await start_pubsub()
    inbox = Inbox()
    host.serve("f", inbox)
    host.bind("subscribe", "f", {"topic": "t"})

    error = await host.call_error("publish", payload)

    assert error.code == code
    assert message in error.message
    await module.wait_idle()
    assert inbox.received == []
    assert _metric(list(module.metrics()), "pubsub_published", "t") == 0


@pytest.mark.parametrize("config", [{}, {"topic": ""}, {"topic": 3}, {"topics": "t"}])
async def test_a_subscription_without_a_topic_is_refused_with_the_reason(
    start_pubsub: StartPubSub, config: dict[str, Any]
) -> None:
    module, host = await start_pubsub()
    _, refusal = host.bind("subscribe", "f", config)
    assert refusal is not None and "topic" in refusal
    assert module.snapshot()["topics"] == []


async def test_an_unbound_function_gets_nothing_more(start_pubsub: StartPubSub) -> None:
    module, host = await start_pubsub()
    kept, gone = Inbox(), Inbox()
    host.serve("kept", kept)
    host.serve("gone", gone)
    host.bind("subscribe", "kept", {"topic": "t"})
    binding, _ = host.bind("subscribe", "gone", {"topic": "t"})
    await host.call("publish", {"topic": "t", "data": 1})
    await kept.wait(1)
    await gone.wait(1)

    host.unbind(binding)
    await host.call("publish", {"topic": "t", "data": 2})

    assert await kept.wait(2) == [1, 2]
    await module.wait_idle()
    assert gone.received == [1]
    assert [s["function_id"] for s in module.snapshot()["topics"][0]["subscribers"]] == ["kept"]


async def test_a_slow_subscriber_holds_a_bounded_queue_and_drops_past_it(
    start_pubsub: StartPubSub, caplog: pytest.LogCaptureFixture
) -> None:
    module, host = await start_pubsub(max_in_flight=1, queue_size=2)
    release = asyncio.Event()
    slow_started = asyncio.Event()
    slow_received: list[int] = []

    async def slow(data: int) -> None:
        slow_started.set()
        await release.wait()
        slow_received.append(data)

    fast = Inbox()
    host.serve("slow", slow)
    host.serve("fast", fast)
    host.bind("subscribe", "slow", {"topic": "t"})
    host.bind("subscribe", "fast", {"topic": "t"})

    with caplog.at_level(logging.WARNING, logger="iii.modules.pubsub"):
        await host.call("publish", {"topic": "t", "data": 0})
        await slow_started.wait()
        for n in range(1, 6):
            await host.call("publish", {"topic": "t", "data": n})
            await fast.wait(n + 1)  # the fast one is not held up by the slow one

        # For the slow one: 0 in flight, 1 and 2 waiting, 3 4 5 dropped; the fast one has them all.
        assert fast.received == [0, 1, 2, 3, 4, 5]
        slow_row = next(s for s in module.snapshot()["topics"][0]["subscribers"] if s["function_id"] == "slow")
        assert (slow_row["in_flight"], slow_row["queued"], slow_row["dropped"]) == (1, 2, 3)
        assert _metric(list(module.metrics()), "pubsub_dropped", "t") == 3
        assert _metric(list(module.metrics()), "pubsub_queued", "t") == 2
        drop_logs = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(drop_logs) == 1, "drops are logged at most once per interval"
        assert "slow" in drop_logs[0].getMessage()

    release.set()
    await module.wait_idle()
    assert slow_received == [0, 1, 2]
    assert _metric(list(module.metrics()), "pubsub_delivered", "t") == 6 + 3


async def test_deliveries_run_concurrently_up_to_max_in_flight(start_pubsub: StartPubSub) -> None:
    module, host = await start_pubsub(max_in_flight=3, queue_size=10)
    running = 0
    peak = 0
    three_running = asyncio.Event()
    release = asyncio.Event()

    async def handler(data: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            three_running.set()
        await release.wait()
        running -= 1

    host.serve("f", handler)
    host.bind("subscribe", "f", {"topic": "t"})
    for n in range(8):
        await host.call("publish", {"topic": "t", "data": n})
    await asyncio.wait_for(three_running.wait(), 5)
    release.set()
    await module.wait_idle()
    assert peak == 3


async def test_failed_deliveries_are_counted_and_do_not_stop_the_others(start_pubsub: StartPubSub) -> None:
    module, host = await start_pubsub()

    def broken(data: Any) -> None:
        raise RuntimeError("no")

    inbox = Inbox()
    host.serve("broken", broken)
    host.serve("ok", inbox)
    host.bind("subscribe", "broken", {"topic": "t"})
    host.bind("subscribe", "ok", {"topic": "t"})
    host.bind("subscribe", "missing", {"topic": "t"})  # a function no one serves

    await host.call("publish", {"topic": "t", "data": 1})
    await host.call("publish", {"topic": "t", "data": 2})

    assert await inbox.wait(2) == [1, 2]
    await module.wait_idle()
    assert _metric(list(module.metrics()), "pubsub_failed", "t") == 4
    assert _metric(list(module.metrics()), "pubsub_delivered", "t") == 2


async def test_snapshot_lists_topics_with_their_subscribers(start_pubsub: StartPubSub) -> None:
    module, host = await start_pubsub()
    binding, _ = host.bind("subscribe", "f", {"topic": "t"})
    host.bind("subscribe", "g", {"topic": "t"})
    host.bind("subscribe", "h", {"topic": "u"})

    snapshot = module.snapshot()

    assert snapshot["backend"] == "local"
    assert [(t["topic"], t["subscriber_count"]) for t in snapshot["topics"]] == [("t", 2), ("u", 1)]
    assert snapshot["topics"][0]["subscribers"][0] == {
        "binding_id": binding.binding_id,
        "function_id": "f",
        "in_flight": 0,
        "queued": 0,
        "delivered": 0,
        "failed": 0,
        "dropped": 0,
    }
    assert {(s.name, s.value) for s in module.metrics() if s.labels == {"topic": "t"}} == {
        ("pubsub_published", 0),
        ("pubsub_delivered", 0),
        ("pubsub_failed", 0),
        ("pubsub_dropped", 0),
        ("pubsub_subscribers", 2),
        ("pubsub_queued", 0),
    }


async def test_metrics_label_at_most_max_metric_topics(start_pubsub: StartPubSub) -> None:
    module, host = await start_pubsub(max_metric_topics=2)
    for topic in ["a", "b", "c", "d"]:
        await host.call("publish", {"topic": topic, "data": 1})
    published = {s.labels["topic"]: s.value for s in module.metrics() if s.name == "pubsub_published"}
    assert published == {"a": 1, "b": 1, "_other": 2}


def test_settings_refuse_what_cannot_work() -> None:
    from iii.modules.pubsub import PubSubSettings

    with pytest.raises(ValueError, match="redis_url"):
        PubSubSettings(backend="redis")
    with pytest.raises(ValueError, match="max_in_flight"):
        PubSubSettings(max_in_flight=0)
    assert PubSubSettings(redis_url="redis://x").uses_redis
    assert not PubSubSettings(redis_url="redis://x", backend="local").uses_redis
