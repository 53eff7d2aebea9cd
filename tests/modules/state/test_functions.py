"""The state::* functions through a LocalHost, on both backends: the reference's shapes (as the official
SDKs' tests check them), versions and compare-and-set, limits, and clear errors for bad requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from iii.modules.state import StateModule, StateSettings
from tests.modules.local_host import LocalHost
from tests.modules.state.conftest import StartModule
from tests.redis_server import RedisServer

State = tuple[StateModule, LocalHost]


async def set_(host: LocalHost, scope: str, key: str, value: Any, **extra: Any) -> Any:
    return await host.call("state::set", {"scope": scope, "key": key, "value": value, **extra})


async def get(host: LocalHost, scope: str, key: str, **extra: Any) -> Any:
    return await host.call("state::get", {"scope": scope, "key": key, **extra})


# --- the reference's shapes (the sdist's tests/test_state.py and the Node SDK's state.test.ts) -----------


async def test_set_answers_old_and_new_value_exactly(state: State) -> None:
    _, host = state
    data = {"name": "Test Item", "value": 42}
    assert await set_(host, "s", "k", data) == {"old_value": None, "new_value": data}
    updated = {"value": 2, "updated": True}
    assert await set_(host, "s", "k", updated) == {"old_value": data, "new_value": updated}


async def test_get_answers_the_value_or_null(state: State) -> None:
    _, host = state
    await set_(host, "s", "k", {"name": "Test", "value": 100})
    assert await get(host, "s", "k") == {"name": "Test", "value": 100}
    assert await get(host, "s", "non-existent-item") is None
    await set_(host, "s", "scalar", 0)
    assert await get(host, "s", "scalar") == 0


async def test_delete_answers_the_deleted_value_and_tolerates_absent_keys(state: State) -> None:
    _, host = state
    await set_(host, "s", "k", {"test": True})
    assert await host.call("state::delete", {"scope": "s", "key": "k"}) == {"test": True}
    assert await get(host, "s", "k") is None
    assert await host.call("state::delete", {"scope": "s", "key": "non-existent"}) is None


async def test_list_answers_the_values_of_a_scope_and_list_groups_its_scopes(state: State) -> None:
    _, host = state
    items = [{"id": "state-item2", "value": 2}, {"id": "state-item1", "value": 1}, {"id": "state-item3", "value": 3}]
    for item in items:
        await set_(host, "items", item["id"], item)
    await set_(host, "another", "anchor", {"present": True})
    assert await host.call("state::list", {"scope": "items"}) == sorted(items, key=lambda item: item["id"])
    assert await host.call("state::list", {"scope": "empty"}) == []
    assert await host.call("state::list_groups", {}) == {"groups": ["another", "items"]}
    await host.call("state::delete", {"scope": "another", "key": "anchor"})
    assert await host.call("state::list_groups", None) == {"groups": ["items"]}


async def test_update_applies_ops_and_keeps_untouched_fields(state: State) -> None:
    _, host = state
    await set_(host, "s", "k", {"count": 0, "name": "initial", "events": [], "transcript": "hello"})
    result = await host.call(
        "state::update",
        {
            "scope": "s",
            "key": "k",
            "ops": [
                {"type": "set", "path": "count", "value": 5},
                {"type": "append", "path": "events", "value": {"kind": "chunk"}},
                {"type": "append", "path": "transcript", "value": " world"},
            ],
        },
    )
    expected = {"count": 5, "name": "initial", "events": [{"kind": "chunk"}], "transcript": "hello world"}
    assert result == {
        "old_value": {"count": 0, "name": "initial", "events": [], "transcript": "hello"},
        "new_value": expected,
        "version": 2,
    }
    assert await get(host, "s", "k") == expected


async def test_update_of_an_absent_key_creates_it(state: State) -> None:
    _, host = state
    result = await host.call(
        "state::update", {"scope": "s", "key": "new", "ops": [{"type": "increment", "path": "hits", "by": 1}]}
    )
    assert result == {"old_value": None, "new_value": {"hits": 1}, "version": 1}


async def test_update_reports_the_ops_it_skipped_and_applies_the_rest(state: State) -> None:
    _, host = state
    await set_(host, "s", "k", {"name": "x"})
    result = await host.call(
        "state::update",
        {
            "scope": "s",
            "key": "k",
            "ops": [{"type": "increment", "path": "name", "by": 1}, {"type": "set", "path": "ok", "value": True}],
        },
    )
    assert result["new_value"] == {"name": "x", "ok": True}
    assert [(error["op_index"], error["code"]) for error in result["errors"]] == [(0, "increment.not_number")]
    assert await get(host, "s", "k") == {"name": "x", "ok": True}


async def test_set_takes_data_for_value_as_the_reference_does(state: State) -> None:
    _, host = state
    await host.call("state::set", {"scope": "s", "key": "k", "data": "hello"})
    assert await get(host, "s", "k") == "hello"


# --- versions and compare-and-set --------------------------------------------------------------------


async def test_versions_count_writes_and_are_shown_when_asked(state: State) -> None:
    _, host = state
    assert await get(host, "s", "k", with_version=True) == {"value": None, "version": 0}
    assert await set_(host, "s", "k", 1, with_version=True) == {"old_value": None, "new_value": 1, "version": 1}
    await set_(host, "s", "k", 2)
    update = await host.call(
        "state::update", {"scope": "s", "key": "k", "ops": [{"type": "increment", "path": "", "by": 1}]}
    )
    assert update["version"] == 3
    assert await get(host, "s", "k", with_version=True) == {"value": 3, "version": 3}


async def test_expected_version_makes_writes_conditional(state: State) -> None:
    _, host = state
    created = await set_(host, "s", "k", "first", expected_version=0)  # 0: only if absent
    assert created["version"] == 1
    refused = await host.call_error("state::set", {"scope": "s", "key": "k", "value": "again", "expected_version": 0})
    assert refused.code == "version_mismatch"
    assert "version 1" in refused.message
    stale = await host.call_error(
        "state::update",
        {"scope": "s", "key": "k", "ops": [{"type": "set", "path": "", "value": "stale"}], "expected_version": 7},
    )
    assert stale.code == "version_mismatch"
    assert await get(host, "s", "k", with_version=True) == {"value": "first", "version": 1}  # nothing written

    updated = await host.call(
        "state::update",
        {"scope": "s", "key": "k", "ops": [{"type": "set", "path": "", "value": "second"}], "expected_version": 1},
    )
    assert (updated["new_value"], updated["version"]) == ("second", 2)
    wrong_delete = await host.call_error("state::delete", {"scope": "s", "key": "k", "expected_version": 1})
    assert wrong_delete.code == "version_mismatch"
    assert await host.call("state::delete", {"scope": "s", "key": "k", "expected_version": 2}) == "second"
    assert await get(host, "s", "k") is None


# --- limits and errors -------------------------------------------------------------------------------


async def test_a_value_over_the_limit_is_refused_by_set_and_by_update(start_module: StartModule) -> None:
    _, host = await start_module(max_value_bytes=100)
    error = await host.call_error("state::set", {"scope": "s", "key": "k", "value": "x" * 200})
    assert error.code == "VALUE_TOO_LARGE"
    assert "100" in error.message
    await set_(host, "s", "k", "x" * 90)  # 92 bytes of JSON
    grow = await host.call_error(
        "state::update", {"scope": "s", "key": "k", "ops": [{"type": "append", "path": "", "value": "y" * 20}]}
    )
    assert grow.code == "VALUE_TOO_LARGE"
    assert await get(host, "s", "k", with_version=True) == {"value": "x" * 90, "version": 1}


@pytest.mark.parametrize(
    ("function_id", "payload", "code", "words"),
    [
        ("state::set", None, "deserialization_error", "the payload must be an object"),
        ("state::set", [1], "deserialization_error", "the payload must be an object"),
        ("state::set", {"key": "k", "value": 1}, "deserialization_error", "missing field `scope`"),
        ("state::set", {"scope": "s", "key": "k"}, "deserialization_error", "missing field `value`"),
        ("state::get", {"scope": "s", "key": 5}, "deserialization_error", "`key` must be a string"),
        ("state::get", {"scope": "", "key": "k"}, "invalid_scope", "must not be empty"),
        ("state::delete", {"scope": "s", "key": ""}, "invalid_key", "must not be empty"),
        ("state::set", {"scope": "s", "key": "k" * 513, "value": 1}, "invalid_key", "513 bytes"),
        ("state::set", {"scope": "s\ud800", "key": "k", "value": 1}, "invalid_scope", "not valid Unicode"),
        ("state::set", {"scope": "s", "key": "k", "value": "\ud800"}, "deserialization_error", "cannot be stored"),
        ("state::list", {}, "deserialization_error", "missing field `scope`"),
        ("state::update", {"scope": "s", "key": "k"}, "deserialization_error", "missing field `ops`"),
        ("state::update", {"scope": "s", "key": "k", "ops": [{"type": "nope"}]}, "deserialization_error", "ops[0]"),
        ("state::set", {"scope": "s", "key": "k", "value": 1, "expected_version": -1}, "deserialization_error", ">= 0"),
        ("state::get", {"scope": "s", "key": "k", "with_version": "yes"}, "deserialization_error", "true or false"),
    ],
)
async def test_bad_requests_get_a_clear_error_and_write_nothing(
    state: State, function_id: str, payload: Any, code: str, words: str
) -> None:
    _, host = state
    error = await host.call_error(function_id, payload)
    assert error.code == code
    assert words in error.message
    assert await host.call("state::list_groups", {}) == {"groups": []}


async def test_a_backend_failure_is_answered_with_the_references_code(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    module = StateModule(StateSettings(data_dir=tmp_path, redis_url=redis_server.url))
    host = LocalHost()
    await module.start(host)
    try:
        await set_(host, "s", "k", 1)
        redis_server.stop()
        error = await host.call_error("state::set", {"scope": "s", "key": "k", "value": 2})
        assert error.code == "SET_ERROR"
        assert error.message.startswith("Failed to set value: ")
        assert (await host.call_error("state::get", {"scope": "s", "key": "k"})).code == "GET_ERROR"
        assert (await host.call_error("state::list_groups", {})).code == "LIST_GROUPS_ERROR"
    finally:
        await module.stop()


# --- what the module reports -------------------------------------------------------------------------


async def test_metrics_and_snapshot_show_scopes_keys_and_operations(state: State) -> None:
    module, host = state
    for key in ("a", "b", "c"):
        await set_(host, "users", key, {"name": key})
    await set_(host, "orders", "o1", 1)
    await host.call_error("state::get", {"scope": "", "key": "k"})
    await module.refresh_stats()

    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value for sample in module.metrics()}
    assert samples["state_keys", (("scope", "users"),)] == 3
    assert samples["state_keys", (("scope", "orders"),)] == 1
    assert samples["state_scopes", ()] == 2
    assert samples["state_operations", (("function", "state::set"), ("outcome", "ok"))] == 4
    assert samples["state_operations", (("function", "state::get"), ("outcome", "refused"))] == 1

    snapshot = module.snapshot()
    assert snapshot["backend"] in ("sqlite", "redis")
    assert snapshot["scopes"] == [
        {"scope": "orders", "keys": 1, "recent_keys": ["o1"]},
        {"scope": "users", "keys": 3, "recent_keys": ["c", "b", "a"]},
    ]
    assert snapshot["operations"] == {"state::get": {"refused": 1}, "state::set": {"ok": 4}}
