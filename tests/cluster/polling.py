"""Waiting without sleeping blind: poll a condition until it holds or its deadline passes, and calls that are
retried while the function is not (yet) known where they are made."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from iii import III, InvocationError

T = TypeVar("T")

POLL_S = 0.002
"""Pause between two attempts: short against what is measured, long enough to leave the engines the CPU."""


def until(attempt: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """The first value of ``attempt()`` that is not None; ``AssertionError`` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = attempt()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(POLL_S)  # paces the polling; the condition decides


def call(client: III, function_id: str, payload: Any = None, timeout_s: float = 5.0) -> Any:
    """One request/response call with a deadline of its own (a lost answer fails the test, never hangs it)."""
    return client.trigger({"function_id": function_id, "payload": payload, "timeout_ms": int(timeout_s * 1000)})


def call_when_known(client: III, function_id: str, payload: Any, timeout_s: float) -> tuple[Any, float]:
    """Call ``function_id`` until the engine knows it (``function_not_found`` until then); the answer and the
    time from the first attempt to it. Any other error fails at once."""
    started = time.monotonic()

    def attempt() -> tuple[Any] | None:
        try:
            return (call(client, function_id, payload),)
        except InvocationError as error:
            if error.code != "function_not_found":
                raise
            return None

    (answer,) = until(attempt, timeout_s, f"{function_id} answered")
    return answer, time.monotonic() - started
