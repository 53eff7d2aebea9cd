"""Trigger actions, spelled as in the official SDK: ``TriggerAction.Void()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class TriggerActionVoid:
    """Fire and forget: the call is sent, nobody waits for its result."""

    type: Literal["void"] = "void"


@dataclass(frozen=True)
class TriggerActionEnqueue:
    """Hand the call to queue ``queue``: the answer is ``{"messageReceiptId": ...}`` once the message is stored, and
    the function is called later (the engine's queue module, or ``enqueue_error`` without a queue provider)."""

    queue: str
    type: Literal["enqueue"] = "enqueue"


class TriggerAction:
    """Factories for the ``action`` of a trigger request."""

    @staticmethod
    def Void() -> TriggerActionVoid:
        return TriggerActionVoid()

    @staticmethod
    def Enqueue(queue: str) -> TriggerActionEnqueue:
        return TriggerActionEnqueue(queue=queue)
