"""The ring buffer the observability stores are made of."""

from __future__ import annotations

import pytest

from iii.modules.observability.store import Ring


def test_past_the_count_the_oldest_records_go_and_are_counted() -> None:
    ring: Ring[int] = Ring(max_count=3, max_bytes=1000)
    for item in range(5):
        ring.add(item, 10)
    assert list(ring) == [2, 3, 4]
    assert list(ring.newest_first()) == [4, 3, 2]
    assert (ring.dropped, ring.added, ring.bytes) == (2, 5, 30)


def test_past_the_bytes_the_oldest_records_go_until_the_new_one_fits() -> None:
    ring: Ring[str] = Ring(max_count=100, max_bytes=100)
    ring.add("a", 40)
    ring.add("b", 40)
    ring.add("c", 50)
    assert list(ring) == ["b", "c"]
    assert (ring.bytes, ring.dropped) == (90, 1)


def test_a_record_larger_than_the_whole_ring_is_not_kept_and_is_counted() -> None:
    ring: Ring[str] = Ring(max_count=10, max_bytes=100)
    ring.add("small", 10)
    ring.add("huge", 101)
    assert list(ring) == ["small"]
    assert ring.dropped == 1


def test_clear_forgets_the_records_without_counting_them_dropped() -> None:
    ring: Ring[int] = Ring(max_count=10, max_bytes=100)
    ring.add(1, 10)
    ring.clear()
    assert (len(ring), ring.bytes, ring.dropped) == (0, 0, 0)


def test_bounds_below_one_are_refused() -> None:
    with pytest.raises(ValueError):
        Ring(max_count=0, max_bytes=10)


def test_since_gives_the_records_kept_after_a_count_still_held() -> None:
    ring: Ring[int] = Ring(max_count=3, max_bytes=100)
    for item in range(5):
        ring.add(item, 10)
    ring.add(99, 1000)  # over max_bytes: not kept, so not counted by `kept`
    assert ring.kept == 5
    assert (ring.since(0), ring.since(3), ring.since(5), ring.since(7)) == ([2, 3, 4], [3, 4], [], [])
    ring.clear()
    ring.add(5, 10)
    assert (ring.kept, ring.since(4), ring.since(5), ring.since(6)) == (6, [5], [5], [])
