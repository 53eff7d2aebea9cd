"""The telemetry intake: at most a budget's worth of the receiver's time per turn of the loop, the rest waiting in
order, and the sockets paused while too much waits (so that a flood of telemetry cannot starve the calls)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from picows import WSTransport

from iii.engine.telemetry_intake import TelemetryIntake


class Clock:
    """The receiver's time: each delivery takes one unit."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Socket:
    """What the intake uses of a picows transport."""

    def __init__(self) -> None:
        self.underlying_transport = self
        self.is_disconnected = False
        self.reading = True

    def pause_reading(self) -> None:
        assert self.reading
        self.reading = False

    def resume_reading(self) -> None:
        assert not self.reading
        self.reading = True


def intake_over(delivered: list[bytes], budget: float = 2.5, max_queued_bytes: int = 1000) -> TelemetryIntake:
    clock = Clock()

    def deliver(message: bytes) -> None:
        delivered.append(message)
        clock.now += 1

    return TelemetryIntake(deliver, turn_budget_s=budget, max_queued_bytes=max_queued_bytes, clock=clock)


def transport(socket: Socket) -> WSTransport:
    return cast(WSTransport, cast(Any, socket))


async def next_turn() -> None:
    """Let the loop run the callbacks scheduled so far (one turn of the intake)."""
    await asyncio.sleep(0)


async def test_messages_are_delivered_at_once_while_the_turn_has_budget() -> None:
    delivered: list[bytes] = []
    intake = intake_over(delivered)
    for n in range(3):
        intake.offer(b"m%d" % n)
    assert delivered == [b"m0", b"m1", b"m2"]  # 3 units: the third began within the budget of 2.5
    assert len(intake) == 0


async def test_past_the_budget_messages_wait_in_order_for_the_next_turns() -> None:
    delivered: list[bytes] = []
    intake = intake_over(delivered)
    for n in range(8):
        intake.offer(b"m%d" % n)
    assert delivered == [b"m0", b"m1", b"m2"]
    assert (len(intake), intake.queued_bytes) == (5, 10)
    await next_turn()
    assert delivered == [b"m%d" % n for n in range(6)]  # a budget's worth per turn
    intake.offer(b"m8")  # something waits: this one queues behind it, even with budget left
    await next_turn()
    assert delivered == [b"m%d" % n for n in range(9)]
    assert (len(intake), intake.queued_bytes) == (0, 0)


async def test_a_socket_is_paused_while_too_much_waits_and_read_again_once_half_is_left() -> None:
    delivered: list[bytes] = []
    intake = intake_over(delivered, budget=1.0, max_queued_bytes=300)
    flooding, closing, quiet = Socket(), Socket(), Socket()
    intake.offer(b"x" * 100, transport(quiet))  # delivered at once
    for _ in range(3):
        intake.offer(b"x" * 100, transport(flooding))
    assert flooding.reading and intake.queued_bytes == 300  # at the bound, not past it
    intake.offer(b"x" * 100, transport(flooding))
    intake.offer(b"x" * 100, transport(closing))
    intake.offer(b"x" * 100, transport(flooding))  # what a paused socket had read already still queues
    assert (flooding.reading, closing.reading, quiet.reading) == (False, False, True)
    assert intake.pauses == 2
    closing.is_disconnected = True
    for waiting in (500, 400, 300, 200):  # one message per turn, at a budget of one
        await next_turn()
        assert intake.queued_bytes == waiting and not flooding.reading
    await next_turn()
    assert intake.queued_bytes == 100 and flooding.reading  # once at most half the bound waits
    assert not closing.reading  # a closed socket is left alone
    while len(intake):
        await next_turn()
    assert len(delivered) == 7


async def test_a_failing_receiver_costs_only_its_message() -> None:
    delivered: list[bytes] = []

    def deliver(message: bytes) -> None:
        if message == b"bad":
            raise ValueError("bad message")
        delivered.append(message)

    intake = TelemetryIntake(deliver, turn_budget_s=0.0)
    intake.offer(b"first")
    intake.offer(b"bad")
    intake.offer(b"after")
    for _ in range(5):
        await next_turn()
    assert delivered == [b"first", b"after"]
