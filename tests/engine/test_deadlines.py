"""Deadlines: never early, at most one grid step late, removable in O(1)."""

from __future__ import annotations

from iii.engine.deadlines import Deadlines


def test_keys_expire_at_their_deadline_not_before() -> None:
    deadlines: Deadlines[str] = Deadlines()
    a = deadlines.add("a", 0.0, 1.05)
    deadlines.add("b", 0.0, 2.0)
    assert a >= 1.05
    assert deadlines.pop_expired(1.0) == []
    assert deadlines.pop_expired(1.2) == ["a"]
    assert deadlines.pop_expired(1.99) == []
    assert deadlines.pop_expired(2.0 + 1e-9) == ["b"]
    assert len(deadlines) == 0


def test_keys_with_one_timeout_expire_in_start_order() -> None:
    deadlines: Deadlines[int] = Deadlines()
    for key in range(5):
        deadlines.add(key, float(key), 10.0)
    assert deadlines.pop_expired(12.0) == [0, 1, 2]
    assert len(deadlines) == 2


def test_discarded_keys_do_not_expire() -> None:
    deadlines: Deadlines[str] = Deadlines()
    slot = deadlines.add("a", 0.0, 1.0)
    deadlines.add("b", 0.0, 1.0)
    deadlines.discard("a", slot)
    deadlines.discard("missing", slot)  # no error
    assert deadlines.pop_expired(5.0) == ["b"]
    assert len(deadlines) == 0
