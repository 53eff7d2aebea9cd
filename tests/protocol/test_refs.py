"""Channel refs: detection anywhere in a payload, and the URL of an end."""

from __future__ import annotations

from iii.protocol.refs import channel_url, is_channel_ref, iter_channel_refs

REF = {"channel_id": "c", "access_key": "k", "direction": "read"}


def test_is_channel_ref_needs_all_three_fields_with_valid_values() -> None:
    assert is_channel_ref(REF)
    assert is_channel_ref({**REF, "extra": 1})
    assert not is_channel_ref({**REF, "direction": "both"})
    assert not is_channel_ref({"channel_id": "c", "access_key": 1, "direction": "read"})
    assert not is_channel_ref([REF])


def test_refs_are_found_in_nested_dicts_lists_and_tuples_with_paths() -> None:
    payload = {"a": REF, "items": [{"w": {**REF, "direction": "write"}}, (REF,)]}
    assert [path for path, _ in iter_channel_refs(payload)] == ["a", "items[0].w", "items[1][0]"]


def test_channel_url_uses_the_engine_address_and_quotes_the_key() -> None:
    assert (
        channel_url("ws://127.0.0.1:49134", "id-1", "a/b+c", "write")
        == "ws://127.0.0.1:49134/ws/channels/id-1?key=a%2Fb%2Bc&dir=write"
    )
    assert channel_url("ws://h:1/?tenant=x", "i", "k", "read") == "ws://h:1/ws/channels/i?tenant=x&key=k&dir=read"
