"""The queue module's settings: the reference's defaults, and a bad queue refused with its name and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from iii.modules.queue import QueueConfig, QueueSettings
from iii.modules.queue.module import subscriber_config


def test_default_always_exists_with_the_reference_defaults(tmp_path: Path) -> None:
    queues = QueueSettings(data_dir=tmp_path, queue_configs={"jobs": {"concurrency": 2}}).named_queues()
    assert queues["default"] == QueueConfig(max_retries=3, concurrency=10, type="standard", backoff_ms=1000)
    assert queues["jobs"].concurrency == 2
    assert [queues["default"].backoff_for(attempt) for attempt in (1, 2, 3)] == [1000, 2000, 4000]


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        ({"type": "fifo"}, "queue 'bad': a fifo queue needs a message_group_field"),
        ({"type": "lifo"}, "queue 'bad': type must be 'standard' or 'fifo'"),
        ({"concurrency": 0}, "queue 'bad': concurrency must be an integer >= 1"),
        ({"max_retry": 2}, "queue 'bad': unknown setting(s) max_retry"),
        ("fast", "queue 'bad': its settings must be a table"),
    ],
)
def test_a_bad_queue_is_refused_with_its_name_and_reason(tmp_path: Path, table: Any, reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        QueueSettings(data_dir=tmp_path, queue_configs={"bad": table})
    assert reason in str(refused.value)


def test_a_subscription_takes_the_reference_queue_config_keys() -> None:
    theirs = {"maxRetries": 7, "backoffDelayMs": 5, "delaySeconds": 1}  # delaySeconds: RabbitMQ's, ignored
    config = subscriber_config({"topic": "t", "queue_config": theirs})
    assert (config.max_retries, config.backoff_ms, config.concurrency) == (7, 5, 10)
    with pytest.raises(ValueError, match="message_group_field"):
        subscriber_config({"topic": "t", "queue_config": {"type": "fifo"}})
