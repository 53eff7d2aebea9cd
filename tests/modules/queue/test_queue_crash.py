"""The engine killed with SIGKILL while 10,000 messages are queued or in flight: after a restart on the same
``--data-dir``, every message whose enqueue was answered is delivered (at least once)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from iii import III, InitOptions, register_worker
from iii.sdk.actions import TriggerAction
from iii.testing import EngineProcess
from tests.modules.queue.deliveries import registered

MESSAGES = 10_000
PRODUCERS = 64
CONFIG = """
[queue]
poll_interval_ms = 20

[queue.queue_configs.crash]
concurrency = 20
max_retries = 50
backoff_ms = 50
"""


class Seen:
    """The message numbers a consumer got (from any number of consumers, threads and engine lives)."""

    def __init__(self) -> None:
        self.numbers: set[int] = set()
        self._changed = threading.Condition()

    async def consume(self, data: Any) -> None:
        await asyncio.sleep(0.005)  # slow enough that most messages are still queued when the engine dies
        with self._changed:
            self.numbers.add(data["n"])
            self._changed.notify_all()

    def wait_for_all(self, expected: set[int], timeout_s: float) -> set[int]:
        with self._changed:
            self._changed.wait_for(lambda: expected <= self.numbers, timeout_s)
            return expected - self.numbers


def consumer(url: str, seen: Seen) -> III:
    client = register_worker(url, InitOptions(worker_name="consumer"))
    client.register_function("jobs::crash", seen.consume)
    return client


async def produce(client: III) -> set[int]:
    """Enqueue MESSAGES messages, PRODUCERS at a time; the numbers whose enqueue answered a receipt."""
    answered: set[int] = set()
    numbers = iter(range(MESSAGES))

    async def producer() -> None:
        for number in numbers:
            request = {
                "function_id": "jobs::crash",
                "payload": {"n": number},
                "action": TriggerAction.Enqueue(queue="crash"),
            }
            answer = await client.trigger(request)
            assert "messageReceiptId" in answer
            answered.add(number)

    await asyncio.gather(*(producer() for _ in range(PRODUCERS)))
    return answered


def test_every_answered_enqueue_is_delivered_after_kill_9_and_a_restart(tmp_path: Path) -> None:
    config = tmp_path / "engine.toml"
    config.write_text(CONFIG)
    args = ["--config", str(config), "--data-dir", str(tmp_path / "data")]
    seen = Seen()
    with EngineProcess(args) as engine:
        first_consumer = consumer(engine.url, seen)
        producer_client = register_worker(engine.url, InitOptions(worker_name="producer"))
        try:
            registered(producer_client, "jobs::crash")
            started = time.monotonic()
            answered = asyncio.run(produce(producer_client))
            enqueue_s = time.monotonic() - started
            engine.kill()
            delivered_before = len(seen.numbers)
        finally:
            first_consumer.shutdown()
            producer_client.shutdown()
    assert answered == set(range(MESSAGES))
    assert delivered_before < MESSAGES, "every message was delivered before the kill: the test proves nothing"

    with EngineProcess(args) as engine:
        second_consumer = consumer(engine.url, seen)
        try:
            missing = seen.wait_for_all(answered, timeout_s=120)
        finally:
            second_consumer.shutdown()
    assert not missing, f"{len(missing)} answered messages never delivered, e.g. {sorted(missing)[:10]}"
    print(f"enqueued {MESSAGES} in {enqueue_s:.2f} s; {delivered_before} delivered before the kill")
