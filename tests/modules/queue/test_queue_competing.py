"""FIFO order per group under retries, with three competing consumer processes: three engines share one queue on
a real Redis, each with a consumer worker of its own, and every engine's dispatcher takes messages from it.

The engines share only the queue (``[queue] redis_url``), not a cluster: in a cluster (``--redis-url``) a function
id has one worker across the engines, as within one engine, and the others stand by."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from iii import InitOptions, register_worker
from iii.sdk.actions import TriggerAction
from iii.testing import EngineProcess
from tests.redis_server import RedisServer

GROUPS = ("a", "b", "c")
PER_GROUP = 20
CONFIG = """
modules = "queue"
[queue]
redis_url = "{redis_url}"
poll_interval_ms = 10
[queue.queue_configs.orders]
type = "fifo"
message_group_field = "customer"
concurrency = 3
backoff_ms = 30
max_retries = 5
"""


def records(files: list[Path]) -> list[dict[str, Any]]:
    lines = []
    for file in files:
        if file.exists():
            lines += [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return sorted(lines, key=lambda line: line["t"])


def test_fifo_order_holds_per_group_under_retries_with_three_competing_consumers(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    config = tmp_path / "engine.toml"
    config.write_text(CONFIG.format(redis_url=redis_server.url))
    markers = tmp_path / "markers"
    markers.mkdir()
    files = [tmp_path / f"consumer-{index}.jsonl" for index in range(3)]
    engines = [EngineProcess(["--config", str(config), "--data-dir", str(tmp_path / f"engine-{i}")]) for i in range(3)]
    consumers: list[subprocess.Popen[str]] = []
    try:
        for engine in engines:
            engine.__enter__()
        for index, engine in enumerate(engines):
            consumer = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.modules.queue.fifo_consumer",
                    engine.url,
                    str(files[index]),
                    str(markers),
                    f"consumer-{index}",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            consumers.append(consumer)
            assert consumer.stdout is not None and consumer.stdout.readline().strip() == "registered"
        with register_worker(engines[0].url, InitOptions(worker_name="producer")) as producer:
            for n in range(PER_GROUP):
                for customer in GROUPS:
                    payload = {"customer": customer, "n": n, "fail_once": n % 5 == 1}
                    answer = producer.trigger(
                        {
                            "function_id": "jobs::order",
                            "payload": payload,
                            "action": TriggerAction.Enqueue(queue="orders"),
                        }
                    )
                    assert "messageReceiptId" in answer
        deadline = time.monotonic() + 30
        while sum(1 for line in records(files) if line["ok"]) < len(GROUPS) * PER_GROUP:
            assert time.monotonic() < deadline, Counter(line["by"] for line in records(files))
            time.sleep(0.05)  # the consumers' record files have no event to wait on
    finally:
        for consumer in consumers:
            if consumer.stdin is not None:
                consumer.stdin.close()
            consumer.wait(10)
        for engine in engines:
            engine.__exit__(None, None, None)
    lines = records(files)
    for customer in GROUPS:
        delivered = [line for line in lines if line["data"]["customer"] == customer]
        succeeded = [line["data"]["n"] for line in delivered if line["ok"]]
        assert succeeded == list(range(PER_GROUP)), (customer, succeeded)  # in order, each once
        retried = [line["data"]["n"] for line in delivered if not line["ok"]]
        assert retried == [n for n in range(PER_GROUP) if n % 5 == 1]  # each failed once, then came in its place
    assert len({line["by"] for line in lines}) >= 2, Counter(line["by"] for line in lines)  # they competed
