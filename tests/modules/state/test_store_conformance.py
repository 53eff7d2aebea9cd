"""What every state backend promises (iii.modules.state.store), checked on SQLite and on a real Redis."""

from __future__ import annotations

import asyncio

import pytest

from iii.modules.state.store import Change, Entry, StateStore, StoreError, VersionConflict


def put(value: bytes) -> Change[Entry | None]:
    """A change that stores ``value`` whatever is there, and reports what it saw."""

    def change(current: Entry | None) -> tuple[bytes, Entry | None]:
        return value, current

    return change


def delete(current: Entry | None) -> tuple[None, Entry | None]:
    return None, current


async def test_an_absent_key_reads_as_none(store: StateStore) -> None:
    assert await store.get("scope", "nothing") is None


async def test_writes_count_versions_from_one_and_deletes_remove(store: StateStore) -> None:
    first = await store.mutate("s", "k", put(b'{"a":1}'))
    assert (first.old, first.version, first.outcome) == (None, 1, None)
    second = await store.mutate("s", "k", put(b"[1,2]"))
    assert second.old == Entry(b'{"a":1}', 1)
    assert second.version == 2
    assert second.outcome == Entry(b'{"a":1}', 1)  # the change saw the current entry
    assert await store.get("s", "k") == Entry(b"[1,2]", 2)

    removed = await store.mutate("s", "k", delete)
    assert (removed.old, removed.version) == (Entry(b"[1,2]", 2), 0)
    assert await store.get("s", "k") is None
    again = await store.mutate("s", "k", put(b"3"))
    assert again.version == 1  # a deleted key starts again


async def test_put_stores_whatever_is_there_and_returns_what_it_replaced(store: StateStore) -> None:
    created = await store.put("s", "k", b"1")
    assert (created.old, created.version) == (None, 1)
    await store.mutate("s", "k", put(b"2"))
    replaced = await store.put("s", "k", b"3")
    assert (replaced.old, replaced.version) == (Entry(b"2", 2), 3)
    assert await store.get("s", "k") == Entry(b"3", 3)
    assert await store.scopes() == ["s"]


async def test_put_with_an_expected_version_writes_only_at_that_version(store: StateStore) -> None:
    assert (await store.put("s", "k", b"1", expected_version=0)).version == 1  # 0: only if absent
    with pytest.raises(VersionConflict) as conflict:
        await store.put("s", "k", b"2", expected_version=0)
    assert conflict.value.actual == 1
    with pytest.raises(VersionConflict):
        await store.put("s", "k", b"2", expected_version=2)
    assert await store.get("s", "k") == Entry(b"1", 1)
    assert (await store.put("s", "k", b"2", expected_version=1)).version == 2
    with pytest.raises(VersionConflict) as absent:
        await store.put("s", "other", b"1", expected_version=1)
    assert absent.value.actual == 0
    assert await store.get("s", "other") is None


async def test_deleting_an_absent_key_changes_nothing(store: StateStore) -> None:
    applied = await store.mutate("s", "ghost", delete)
    assert (applied.old, applied.version) == (None, 0)
    assert await store.scopes() == []


async def test_a_change_that_raises_writes_nothing_and_fails_alone(store: StateStore) -> None:
    await store.mutate("s", "k", put(b"1"))

    def refuse(current: Entry | None) -> tuple[bytes, None]:
        raise ValueError("no")

    results = await asyncio.gather(
        store.mutate("s", "k", refuse), store.mutate("s", "other", put(b"2")), return_exceptions=True
    )
    assert isinstance(results[0], ValueError)
    assert await store.get("s", "k") == Entry(b"1", 1)
    assert await store.get("s", "other") == Entry(b"2", 1)


async def test_values_are_in_key_order_and_scopes_sorted_and_counted(store: StateStore) -> None:
    for scope, key, value in [("b", "z", b"1"), ("b", "a", b"2"), ("a", "m", b"3"), ("b", "é", b"4"), ("c", "x", b"5")]:
        await store.mutate(scope, key, put(value))
    await store.mutate("c", "x", delete)
    assert await store.values("b") == [b"2", b"1", b"4"]  # a, z, é: code point order
    assert await store.values("nothing") == []
    assert await store.scopes() == ["a", "b"]  # "c" is empty again
    assert await store.scope_counts() == {"a": 1, "b": 3}


async def test_names_are_taken_literally(store: StateStore) -> None:
    """Scopes and keys with separators, quotes or non-ASCII text do not collide or leak into each other."""
    names = [("a:b", "c"), ("a", "b:c"), ("'; DROP TABLE state; --", "k"), ("日本", "🔑"), ("a", "b")]
    for index, (scope, key) in enumerate(names):
        await store.mutate(scope, key, put(str(index).encode()))
    for index, (scope, key) in enumerate(names):
        assert await store.get(scope, key) == Entry(str(index).encode(), 1)
    assert await store.scopes() == sorted({scope for scope, _ in names})


async def test_concurrent_changes_of_one_key_each_see_the_last(store: StateStore) -> None:
    def add_one(current: Entry | None) -> tuple[bytes, None]:
        count = int(current.value) if current is not None else 0
        return str(count + 1).encode(), None

    await asyncio.gather(*(store.mutate("s", "counter", add_one) for _ in range(200)))
    assert await store.get("s", "counter") == Entry(b"200", 200)
    puts = [store.put("s", "counter", b"0") for _ in range(10)]  # puts between the changes: none is lost
    await asyncio.gather(*(store.mutate("s", "counter", add_one) for _ in range(100)), *puts)
    entry = await store.get("s", "counter")
    assert entry is not None
    assert entry.version == 310


async def test_close_finishes_the_writes_already_submitted(store: StateStore) -> None:
    writes = [asyncio.ensure_future(store.mutate("s", f"k{i}", put(b"1"))) for i in range(50)]
    await asyncio.sleep(0)  # let them all be submitted
    await store.close()
    results = await asyncio.gather(*writes)
    assert all(applied.version == 1 for applied in results)
    with pytest.raises(StoreError):
        await store.get("s", "k0")
    with pytest.raises(StoreError):
        await store.mutate("s", "k0", put(b"2"))
