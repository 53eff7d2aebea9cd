"""Deadlines: never early, at most one tick late, removable in O(1)."""

from __future__ import annotations

from iii.engine.deadlines import Deadlines


def test_keys_expire_at_their_deadline_not_before() -> None:
    deadlines: Deadlines[str] = Deadlines(tick_s=0.1)
    deadlines.add("a", 1.05)
    deadlines.add("b", 2.0)
    assert deadlines.pop_expired(1.0) == []
    assert deadlines.pop_expired(1.1) == ["a"]
    assert deadlines.pop_expired(1.99) == []
    assert deadlines.pop_expired(2.0) == ["b"]
    assert len(deadlines) == 0


def test_discarded_and_replaced_keys_do_not_expire_twice() -> None:
    deadlines: Deadlines[str] = Deadlines(tick_s=0.1)
    deadlines.add("a", 1.0)
    deadlines.add("b", 1.0)
    deadlines.discard("a")
    deadlines.add("b", 5.0)
    assert deadlines.pop_expired(4.0) == []
    assert deadlines.pop_expired(5.0) == ["b"]
    deadlines.discard("missing")  # no error


def test_a_bucket_emptied_and_refilled_still_expires() -> None:
    deadlines: Deadlines[int] = Deadlines(tick_s=1.0)
    deadlines.add(1, 3.0)
    deadlines.discard(1)
    deadlines.add(2, 3.0)
    assert deadlines.pop_expired(3.0) == [2]
