"""Pub/sub: ``publish`` to a topic, ``subscribe`` triggers receive it; in this process or across engines on Redis."""

from .module import PubSubModule, PubSubSettings

__all__ = ["PubSubModule", "PubSubSettings"]
