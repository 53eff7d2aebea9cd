"""The queue module: durable named queues and topics (see :mod:`iii.modules.queue.module`)."""

from iii.modules.queue.module import QueueModule
from iii.modules.queue.settings import QueueConfig, QueueSettings

__all__ = ["QueueConfig", "QueueModule", "QueueSettings"]
