"""What the stream store promises (iii.modules.streams.store), checked on SQLite and on a real Redis."""

from __future__ import annotations

from collections.abc import Callable

from iii.modules.state import StateSettings
from iii.modules.state.module import open_store
from iii.modules.state.store import Entry
from iii.modules.streams.settings import StreamsSettings
from iii.modules.streams.store import GroupAddress, StreamStore, open_stream_store

G = GroupAddress


def delete(current: Entry | None) -> tuple[None, Entry | None]:
    return None, current


async def test_items_are_kept_per_stream_group_and_id(store: StreamStore) -> None:
    assert await store.get(G("s", "g"), "i") is None
    created = await store.put(G("s", "g"), "i", b"1")
    assert (created.old, created.version) == (None, 1)
    replaced = await store.put(G("s", "g"), "i", b"2")
    assert replaced.old == Entry(b"1", 1)
    await store.put(G("s", "other"), "i", b"3")
    await store.put(G("t", "g"), "i", b"4")
    assert await store.get(G("s", "g"), "i") == Entry(b"2", 2)
    assert await store.get(G("s", "other"), "i") == Entry(b"3", 1)
    assert await store.get(G("t", "g"), "i") == Entry(b"4", 1)


async def test_items_list_in_id_order_and_deleted_items_leave(store: StreamStore) -> None:
    for item_id, value in (("b", b"2"), ("a", b"1"), ("c", b"3")):
        await store.put(G("s", "g"), item_id, value)
    assert await store.items(G("s", "g")) == [b"1", b"2", b"3"]
    removed = await store.mutate(G("s", "g"), "b", delete)
    assert (removed.old, removed.version) == (Entry(b"2", 1), 0)
    assert await store.items(G("s", "g")) == [b"1", b"3"]
    assert await store.items(G("s", "empty")) == []


async def test_first_items_gives_the_group_size_and_its_first_ids_with_their_items(store: StreamStore) -> None:
    for item_id in ("c", "a", "d", "b"):
        await store.put(G("s", "g"), item_id, f'"{item_id}"'.encode())
    await store.put(G("s", "other"), "0", b"0")
    assert await store.first_items(G("s", "g"), 2) == (4, [("a", b'"a"'), ("b", b'"b"')])
    assert await store.first_items(G("s", "g"), 10) == (4, [("a", b'"a"'), ("b", b'"b"'), ("c", b'"c"'), ("d", b'"d"')])
    assert await store.first_items(G("s", "empty"), 10) == (0, [])


async def test_groups_and_streams_list_only_non_empty_ones_sorted(store: StreamStore) -> None:
    await store.put(G("orders", "beta"), "2", b"2")
    await store.put(G("orders", "alpha"), "1", b"1")
    await store.put(G("users", "default"), "3", b"3")
    await store.put(G("users", "gone"), "4", b"4")
    await store.mutate(G("users", "gone"), "4", delete)
    assert await store.groups("orders") == ["alpha", "beta"]
    assert await store.groups("users") == ["default"]
    assert await store.groups("nothing") == []
    assert await store.streams() == {"orders": ["alpha", "beta"], "users": ["default"]}
    assert await store.group_counts() == {G("orders", "alpha"): 1, G("orders", "beta"): 1, G("users", "default"): 1}


async def test_names_with_separators_and_quotes_never_mix_streams_or_groups(store: StreamStore) -> None:
    # Names that would collide under a "stream:group" key, or under a naive prefix match.
    tricky = [G("a", "b:c"), G("a:b", "c"), G('a","b', "c"), G("a", '"b",c'), G("a,", "b"), G("é☃", "ü\n")]
    for index, group in enumerate(tricky):
        await store.put(group, "i", str(index).encode())
    for index, group in enumerate(tricky):
        assert await store.get(group, "i") == Entry(str(index).encode(), 1)
        assert await store.items(group) == [str(index).encode()]
    assert await store.groups("a") == sorted(["b:c", '"b",c'])
    assert await store.groups("a,") == ["b"]
    assert await store.groups('a","b') == ["c"]
    assert await store.streams() == {
        "a": sorted(["b:c", '"b",c']),
        "a:b": ["c"],
        'a","b': ["c"],
        "a,": ["b"],
        "é☃": ["ü\n"],
    }


async def test_items_outlive_the_store_and_live_apart_from_state(
    settings_for: Callable[..., StreamsSettings], backend: str
) -> None:
    first = await open_stream_store(settings_for())
    await first.put(G("s", "g"), "i", b'{"kept":true}')
    await first.close()
    again = await open_stream_store(settings_for())
    try:
        assert await again.get(G("s", "g"), "i") == Entry(b'{"kept":true}', 1)
    finally:
        await again.close()
    if backend == "sqlite":
        assert [path.name for path in settings_for().data_dir.glob("*.sqlite3")] == ["streams.sqlite3"]


async def test_state_written_on_the_same_backend_is_never_seen_as_stream_items(
    settings_for: Callable[..., StreamsSettings], store: StreamStore
) -> None:
    settings = settings_for()
    state = await open_store(
        StateSettings(data_dir=settings.data_dir, backend=settings.backend, redis_url=settings.redis_url)
    )
    try:
        await state.put('["s","g"]', "i", b"1")  # the scope a stream group's items would have
        assert await store.get(G("s", "g"), "i") is None
        assert await store.streams() == {}
        await store.put(G("s", "g"), "j", b"2")
        assert await state.get('["s","g"]', "j") is None
    finally:
        await state.close()
