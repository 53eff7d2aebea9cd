"""The queue module inside a real engine, driven by workers of our SDK: the delivery semantics the README states."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from iii import III, InitOptions, InvocationError, register_worker
from iii.engine import Engine
from iii.sdk.actions import TriggerAction
from tests.modules.queue.deliveries import Deliveries, registered

StartEngine = Callable[..., Awaitable[Engine]]

QUEUES = {
    "fast": {"backoff_ms": 100, "max_retries": 3},
    "once": {"max_retries": 1, "backoff_ms": 10},
    "orders": {"type": "fifo", "message_group_field": "customer", "backoff_ms": 50, "max_retries": 3},
}


async def queue_engine(start_engine: StartEngine, **overrides: Any) -> Engine:
    settings = {"queue": {"queue_configs": QUEUES, "poll_interval_ms": 20}}
    return await start_engine(http_port=-1, module_settings=settings, **overrides)


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The engine settings of each queue backend: SQLite in the data directory, or a real Redis."""
    if request.param == "sqlite":
        return {}
    return {"redis_url": request.getfixturevalue("redis_server").url}


@contextmanager
def worker(engine: Engine, name: str = "jobs") -> Iterator[III]:
    with register_worker(f"ws://127.0.0.1:{engine.port}", InitOptions(worker_name=name)) as client:
        yield client


def enqueue(client: III, function_id: str, payload: Any, queue: str = "default") -> str:
    answer = client.trigger(
        {"function_id": function_id, "payload": payload, "action": TriggerAction.Enqueue(queue=queue)}
    )
    assert set(answer) == {"messageReceiptId"}
    receipt: str = answer["messageReceiptId"]
    return receipt


def stats(client: III, topic: str) -> dict[str, Any]:
    result: dict[str, Any] = client.trigger({"function_id": "engine::queue::topic_stats", "payload": {"topic": topic}})
    return result


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polls the engine's own counters over the protocol


async def test_an_enqueue_answers_a_receipt_and_the_function_gets_the_payload_once(
    start_engine: StartEngine, backend: dict[str, Any]
) -> None:
    engine = await queue_engine(start_engine, **backend)
    deliveries = Deliveries()

    def scenario() -> None:
        with worker(engine) as client:
            client.register_function("jobs::run", deliveries.record)
            registered(client, "jobs::run")
            receipts = {enqueue(client, "jobs::run", {"n": index}) for index in range(20)}
            assert len(receipts) == 20
            assert sorted(item["n"] for item in deliveries.wait(20)) == list(range(20))
            wait_for(lambda: stats(client, "default")["in_flight"] == 0, "the acknowledgements")
            assert stats(client, "default")["depth"] == 0

    await asyncio.to_thread(scenario)
    assert len(deliveries.received) == 20  # acknowledged: never delivered again


async def test_bad_enqueues_get_clear_enqueue_errors(start_engine: StartEngine) -> None:
    engine = await queue_engine(start_engine)

    def scenario() -> None:
        with worker(engine) as client:
            with pytest.raises(InvocationError) as unknown:
                enqueue(client, "jobs::run", {}, queue="nope")
            assert unknown.value.code == "enqueue_error"
            assert "Queue 'nope' not found" in unknown.value.message
            with pytest.raises(InvocationError) as no_group:
                enqueue(client, "jobs::run", {"amount": 1}, queue="orders")
            assert no_group.value.code == "enqueue_error"
            assert "'customer'" in no_group.value.message

    await asyncio.to_thread(scenario)


async def test_without_the_queue_module_an_enqueue_says_what_to_run(start_engine: StartEngine) -> None:
    engine = await start_engine(http_port=-1, modules="state")

    def scenario() -> None:
        with worker(engine) as client, pytest.raises(InvocationError) as refused:
            enqueue(client, "jobs::run", {})
        assert refused.value.code == "enqueue_error"
        assert "engine::queue::enqueue" in refused.value.message and "--modules" in refused.value.message

    await asyncio.to_thread(scenario)


async def test_failures_are_retried_with_exponential_backoff_then_dead_with_the_last_error_and_redriven(
    start_engine: StartEngine,
    backend: dict[str, Any],
) -> None:
    engine = await queue_engine(start_engine, **backend)
    deliveries = Deliveries()
    healed = False

    def flaky(data: Any) -> Any:
        deliveries.record(data)
        if not healed:
            raise RuntimeError(f"attempt {len(deliveries.received)} failed")
        return {"ok": True}

    def scenario() -> None:
        nonlocal healed
        with worker(engine) as client:
            client.register_function("jobs::flaky", flaky)
            registered(client, "jobs::flaky")
            receipt = enqueue(client, "jobs::flaky", {"id": "x"}, queue="fast")
            deliveries.wait(3)
            wait_for(lambda: stats(client, "fast")["dlq_depth"] == 1, "the dead letter")
            times = [at for at, _ in deliveries.received]
            assert times[1] - times[0] >= 0.1 and times[2] - times[1] >= 0.2  # backoff_ms * 2 ** (attempt - 1)
            dead = client.trigger({"function_id": "engine::queue::dlq_messages", "payload": {"topic": "fast"}})
            assert [(m["id"], m["payload"], m["retries"]) for m in dead] == [(receipt, {"id": "x"}, 3)]
            assert dead[0]["error"] == "attempt 3 failed"
            assert len(deliveries.received) == 3  # max_retries deliveries in all

            healed = True
            redriven = client.trigger({"function_id": "iii::queue::redrive", "payload": {"queue": "fast"}})
            assert redriven == {"queue": "fast", "redriven": 1}
            deliveries.wait(4)
            wait_for(lambda: stats(client, "fast")["in_flight"] == 0, "the acknowledgement")
            assert stats(client, "fast")["dlq_depth"] == 0

    await asyncio.to_thread(scenario)


async def test_one_dead_message_is_redriven_or_discarded_by_id(start_engine: StartEngine) -> None:
    engine = await queue_engine(start_engine)
    deliveries = Deliveries()

    def failing(data: Any) -> None:
        deliveries.record(data)
        raise RuntimeError("no")

    def scenario() -> None:
        with worker(engine) as client:
            client.register_function("jobs::fail", failing)
            registered(client, "jobs::fail")
            first, second = (enqueue(client, "jobs::fail", {"n": n}, queue="once") for n in (1, 2))
            wait_for(lambda: stats(client, "once")["dlq_depth"] == 2, "two dead letters")
            call = {"function_id": "iii::queue::discard_message", "payload": {"queue": "once", "message_id": first}}
            assert client.trigger(call) == {"queue": "once", "message_id": first, "redriven": 1}
            assert client.trigger(call) == {"queue": "once", "message_id": first, "redriven": 0}
            call = {"function_id": "iii::queue::redrive_message", "payload": {"queue": "once", "message_id": second}}
            assert client.trigger(call)["redriven"] == 1
            deliveries.wait(3)
            assert deliveries.payloads[-1] == {"n": 2}
            with pytest.raises(InvocationError) as missing:
                client.trigger({"function_id": "iii::queue::redrive_message", "payload": {"queue": "once"}})
            assert missing.value.code == "message_id_not_set"

    await asyncio.to_thread(scenario)


async def test_a_timed_out_delivery_is_retried(start_engine: StartEngine) -> None:
    engine = await queue_engine(start_engine, invocation_timeout_s=0.3)
    deliveries = Deliveries()

    async def slow_once(data: Any) -> Any:
        deliveries.record(data)
        if len(deliveries.received) == 1:
            await asyncio.sleep(2)  # longer than the engine's invocation timeout
        return {"ok": True}

    def scenario() -> None:
        with worker(engine) as client:
            client.register_function("jobs::slow", slow_once)
            registered(client, "jobs::slow")
            enqueue(client, "jobs::slow", {"n": 1}, queue="fast")
            deliveries.wait(2)
            wait_for(lambda: stats(client, "fast")["in_flight"] == 0, "the acknowledgement")
            assert stats(client, "fast")["dlq_depth"] == 0

    await asyncio.to_thread(scenario)
    times = [at for at, _ in deliveries.received]
    assert times[1] - times[0] >= 0.3 + 0.1  # the timeout, then the first backoff


async def test_fifo_keeps_order_within_a_group_and_a_failing_message_holds_only_its_group(
    start_engine: StartEngine,
    backend: dict[str, Any],
) -> None:
    engine = await queue_engine(start_engine, **backend)
    deliveries = Deliveries()
    failures = itertools.count()

    def handle(data: Any) -> Any:
        deliveries.record(data)
        if data == {"customer": "a", "n": 0} and next(failures) < 2:
            raise RuntimeError("a0 fails twice")
        return None

    def scenario() -> None:
        with worker(engine) as client:
            client.register_function("jobs::order", handle)
            registered(client, "jobs::order")
            for n in range(5):
                for customer in ("a", "b"):
                    enqueue(client, "jobs::order", {"customer": customer, "n": n}, queue="orders")
            deliveries.wait(12)

    await asyncio.to_thread(scenario)
    group_a = [data["n"] for data in deliveries.payloads if data["customer"] == "a"]
    group_b = [data["n"] for data in deliveries.payloads if data["customer"] == "b"]
    assert group_a == [0, 0, 0, 1, 2, 3, 4]  # a0 retried in place: nothing of group a overtakes it
    assert group_b == [0, 1, 2, 3, 4]
    last_of_b = deliveries.times_of(lambda data: data == {"customer": "b", "n": 4})[0]
    a1 = deliveries.times_of(lambda data: data == {"customer": "a", "n": 1})[0]
    assert last_of_b < a1  # group b went on while group a waited out a0's backoff


async def test_a_message_in_flight_on_a_worker_that_dies_goes_at_once_to_another_without_counting_an_attempt(
    start_engine: StartEngine,
) -> None:
    engine = await queue_engine(start_engine)
    deliveries = Deliveries()
    url = f"ws://127.0.0.1:{engine.port}"

    def scenario() -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.modules.queue.blocking_worker", url], stdout=subprocess.PIPE, text=True
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "registered"
            with worker(engine, "standby") as client:
                registered(client, "jobs::hang")
                client.register_function("jobs::hang", deliveries.record)  # stands by behind the hanging worker
                enqueue(client, "jobs::hang", {"n": 1}, queue="once")  # a counted failure would bury it
                assert process.stdout.readline().strip() == '{"n": 1}'
                process.kill()
                killed_at = time.monotonic()
                assert deliveries.wait(1) == [{"n": 1}]
                assert deliveries.received[0][0] - killed_at < 1.0
                wait_for(lambda: stats(client, "once")["in_flight"] == 0, "the acknowledgement")
                assert stats(client, "once")["dlq_depth"] == 0
        finally:
            process.kill()
            process.wait()

    await asyncio.to_thread(scenario)


async def test_durable_topics_give_every_subscribed_function_every_message(start_engine: StartEngine) -> None:
    engine = await queue_engine(start_engine)
    audit, mail = Deliveries(), Deliveries()

    def scenario() -> None:
        with worker(engine) as client:
            client.register_function("orders::audit", audit.record)
            client.register_function("orders::mail", mail.record)
            for function_id in ("orders::audit", "orders::mail"):
                client.register_trigger(
                    {"type": "durable:subscriber", "function_id": function_id, "config": {"topic": "orders"}}
                )
            wait_for(
                lambda: len(client.trigger({"function_id": "engine::queue::list_topics", "payload": {}})) == 5,
                "the two subscriptions",
            )
            for n in range(3):
                published = {"function_id": "iii::durable::publish", "payload": {"topic": "orders", "data": {"n": n}}}
                assert client.trigger(published) is None
            assert sorted(item["n"] for item in audit.wait(3)) == [0, 1, 2]
            assert sorted(item["n"] for item in mail.wait(3)) == [0, 1, 2]
            topics = client.trigger({"function_id": "engine::queue::list_topics", "payload": {}})
            assert {"name": "orders", "broker_type": "sqlite", "subscriber_count": 2} in topics
            with pytest.raises(InvocationError) as unset:
                client.trigger({"function_id": "iii::durable::publish", "payload": {"topic": "", "data": 1}})
            assert unset.value.code == "topic_not_set"

    await asyncio.to_thread(scenario)
