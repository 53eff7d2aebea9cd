"""The streams module's answers to the console (``console_query``, iii.modules.streams.console), on both
backends: the streams with their groups and sizes, one group's items with their ids, and every part bounded by
the settings whatever the store holds."""

from __future__ import annotations

import pytest

from tests.modules.streams.conftest import StartModule


async def test_the_view_lists_groups_with_sizes_and_the_asked_groups_items_with_ids(start_module: StartModule) -> None:
    module, host = await start_module()
    for item_id, data in (("t2", {"done": True}), ("t1", {"done": False})):
        await host.call("stream::set", {"stream_name": "todos", "group_id": "alice", "item_id": item_id, "data": data})
    await host.call("stream::set", {"stream_name": "todos", "group_id": "bob", "item_id": "x", "data": "é"})
    await host.call("stream::set", {"stream_name": "chat", "group_id": "room", "item_id": "m", "data": 1})
    assert await module.console_query({}) == {
        "streams": [
            {"id": "chat", "groups": [{"id": "room", "items": 1}]},
            {"id": "todos", "groups": [{"id": "alice", "items": 2}, {"id": "bob", "items": 1}]},
        ],
        "groups_shown": 3,
        "groups_total": 3,
        "group": None,
    }
    answer = await module.console_query({"stream_name": "todos", "group_id": "alice"})
    assert answer["group"] == {
        "stream_name": "todos",
        "group_id": "alice",
        "total": 2,
        "items": [
            {"id": "t1", "value": '{"done":false}', "truncated": False},
            {"id": "t2", "value": '{"done":true}', "truncated": False},
        ],
    }
    empty = await module.console_query({"stream_name": "todos", "group_id": "nobody"})
    assert empty["group"] == {"stream_name": "todos", "group_id": "nobody", "total": 0, "items": []}


async def test_groups_items_and_values_are_capped_by_the_settings(start_module: StartModule) -> None:
    module, host = await start_module(console_max_groups=2, console_max_items=3, console_max_value_bytes=8)
    for index in range(10):
        data = f"☃☃☃{index}"
        await host.call("stream::set", {"stream_name": "s", "group_id": "big", "item_id": f"i{index}", "data": data})
    for group_id in ("a", "b"):
        await host.call("stream::set", {"stream_name": "s", "group_id": group_id, "item_id": "x", "data": 0})
    answer = await module.console_query({"stream_name": "s", "group_id": "big"})
    assert answer["streams"] == [{"id": "s", "groups": [{"id": "a", "items": 1}, {"id": "b", "items": 1}]}]
    assert (answer["groups_shown"], answer["groups_total"]) == (2, 3)
    group = answer["group"]
    assert group["total"] == 10 and [item["id"] for item in group["items"]] == ["i0", "i1", "i2"]
    # 8 bytes of '"☃☃☃0"' (12) end inside the third snowman: it is left out, not mangled
    assert group["items"][0] == {"id": "i0", "value": '"☃☃', "truncated": True}
    small = await module.console_query({"stream_name": "s", "group_id": "a"})
    assert small["group"]["items"] == [{"id": "x", "value": "0", "truncated": False}]
    assert await host.call("stream::list", {"stream_name": "s", "group_id": "big"}) == [
        f"☃☃☃{index}" for index in range(10)
    ]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ([], "is an object"),
        ({"stream_name": "s"}, "go together"),
        ({"stream_name": "s", "group_id": 3}, "go together"),
    ],
)
async def test_a_malformed_query_is_refused_with_the_reason(
    start_module: StartModule, query: object, reason: str
) -> None:
    module, _ = await start_module()
    with pytest.raises(ValueError, match=reason):
        await module.console_query(query)
