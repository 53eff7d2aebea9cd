"""The update ops (iii.modules.state.ops): the reference engine's semantics, and malformed ops refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from iii.modules.api import FunctionError
from iii.modules.state.ops import MISSING, apply_ops, parse_ops


def run(old: Any, *ops: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    return apply_ops(copy.deepcopy(old), parse_ops(list(ops)))


def codes(errors: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(error["op_index"], error["code"]) for error in errors]


def test_set_replaces_a_field_or_the_whole_value() -> None:
    assert run({"count": 0, "name": "initial"}, {"type": "set", "path": "count", "value": 5}) == (
        {"count": 5, "name": "initial"},
        [],
    )
    assert run({"a": 1}, {"type": "set", "path": "", "value": [1]}) == ([1], [])
    assert run({"a": 1}, {"type": "set", "path": "b"}) == ({"a": 1, "b": None}, [])  # no value: null


def test_ops_apply_in_order_starting_from_an_empty_object_for_an_absent_key() -> None:
    value, errors = run(
        MISSING,
        {"type": "set", "path": "status", "value": "new"},
        {"type": "increment", "path": "count", "by": 2},
        {"type": "increment", "path": "count", "by": 3},
        {"type": "decrement", "path": "left", "by": 4},
        {"type": "remove", "path": "status"},
    )
    assert (value, errors) == ({"count": 5, "left": -4}, [])


def test_root_arithmetic_on_an_absent_key_starts_from_zero() -> None:
    assert run(MISSING, {"type": "increment", "path": "", "by": 7}) == (7, [])
    assert run(MISSING, {"type": "decrement", "path": "", "by": 7}) == (-7, [])
    assert run(1.5, {"type": "increment", "path": "", "by": 1}) == (2.5, [])


def test_append_pushes_onto_arrays_and_concatenates_strings() -> None:
    value, errors = run(
        {"events": [], "transcript": "hello"},
        {"type": "append", "path": "events", "value": {"kind": "chunk"}},
        {"type": "append", "path": "transcript", "value": " world"},
        {"type": "append", "path": "fresh", "value": "text"},
        {"type": "append", "path": "items", "value": 1},
        {"type": "append", "path": ["deep", "log"], "value": "line"},
    )
    assert errors == []
    assert value == {
        "events": [{"kind": "chunk"}],
        "transcript": "hello world",
        "fresh": "text",  # a missing field starts as the string itself
        "items": [1],
        "deep": {"log": ["line"]},  # a nested missing leaf is always an array
    }
    assert run(MISSING, {"type": "append", "value": 1}) == ([1], [])
    assert run(MISSING, {"type": "append", "value": "a"}) == ("a", [])


def test_merge_at_the_root_and_at_nested_paths() -> None:
    value, errors = run(
        {"a": 1, "b": {"c": 2}, "x": 5},
        {"type": "merge", "value": {"a": 10, "n": True}},
        {"type": "merge", "path": "b", "value": {"d": 3}},
        {"type": "merge", "path": ["x", "y"], "value": {"z": 1}},  # a non-object step becomes an object
        {"type": "merge", "path": ["a.b"], "value": {"k": 1}},  # dots are not separators
    )
    assert errors == []
    assert value == {"a": 10, "n": True, "b": {"c": 2, "d": 3}, "x": {"y": {"z": 1}}, "a.b": {"k": 1}}


def test_an_op_that_cannot_apply_is_reported_and_the_others_apply() -> None:
    value, errors = run(
        {"name": "x", "list": [1], "n": 1},
        {"type": "increment", "path": "name", "by": 1},
        {"type": "increment", "path": "n", "by": 1},
        {"type": "append", "path": "n", "value": 2},
        {"type": "append", "path": "name", "value": 3},
        {"type": "merge", "value": [1]},
        {"type": "merge", "path": ["__proto__"], "value": {"a": 1}},
        {"type": "merge", "value": {"constructor": 1}},
        {"type": "set", "path": "x" * 300, "value": 1},
    )
    assert value == {"name": "x", "list": [1], "n": 2}
    assert codes(errors) == [
        (0, "increment.not_number"),
        (2, "append.type_mismatch"),
        (3, "append.type_mismatch"),
        (4, "merge.value.not_an_object"),
        (5, "merge.path.proto_polluted"),
        (6, "merge.value.proto_polluted"),
        (7, "set.path.segment_too_long"),
    ]
    assert all(error["message"] for error in errors)


def test_field_ops_on_a_value_that_is_not_an_object_are_reported() -> None:
    value, errors = run(
        [1, 2],
        {"type": "set", "path": "a", "value": 1},
        {"type": "increment", "path": "a", "by": 1},
        {"type": "decrement", "path": "a", "by": 1},
        {"type": "remove", "path": "a"},
        {"type": "append", "path": "a", "value": 1},
        {"type": "merge", "value": {"a": 1}},  # the reference skips this silently; we say so
    )
    assert value == [1, 2]
    assert codes(errors) == [
        (0, "set.target_not_object"),
        (1, "increment.target_not_object"),
        (2, "decrement.target_not_object"),
        (3, "remove.target_not_object"),
        (4, "append.target_not_object"),
        (5, "merge.target_not_object"),
    ]


def test_merge_values_are_bounded() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(20):
        node["n"] = {}
        node = node["n"]
    _, errors = run({}, {"type": "merge", "value": deep}, {"type": "merge", "value": {str(i): i for i in range(1025)}})
    assert codes(errors) == [(0, "merge.value.too_deep"), (1, "merge.value.too_many_keys")]
    _, errors = run(
        {}, {"type": "merge", "path": ["a"] * 33, "value": {}}, {"type": "merge", "path": ["a", ""], "value": {}}
    )
    assert codes(errors) == [(0, "merge.path.too_deep"), (1, "merge.path.empty_segment")]


def test_applying_twice_gives_the_same_result_and_leaves_the_ops_unchanged() -> None:
    """A retried write runs its change again: values taken from ops must not be shared with the result."""
    ops = parse_ops([{"type": "set", "path": "list", "value": [1]}, {"type": "append", "path": "list", "value": 2}])
    first, _ = apply_ops({}, ops)
    second, _ = apply_ops({}, ops)
    assert first == second == {"list": [1, 2]}


@pytest.mark.parametrize(
    ("ops", "words"),
    [
        ("not a list", "`ops` must be a list"),
        ([1], "ops[0]: an op must be an object"),
        ([{"type": "explode"}], "ops[0]: unknown op type 'explode'"),
        ([{"path": "a"}], "unknown op type None"),
        ([{"type": "set", "path": "a", "value": 1}, {"type": "set", "value": 1}], "ops[1]: missing field `path`"),
        ([{"type": "increment", "path": "a"}], "`by` must be an integer"),
        ([{"type": "increment", "path": "a", "by": 1.5}], "`by` must be an integer"),
        ([{"type": "decrement", "path": "a", "by": True}], "`by` must be an integer"),
        ([{"type": "remove", "path": 3}], "`path` must be a string"),
        ([{"type": "merge", "path": "a"}], "missing field `value`"),
        ([{"type": "append", "path": [1], "value": 1}], "`path` must be a string or a list of strings"),
    ],
)
def test_malformed_ops_are_a_deserialization_error(ops: Any, words: str) -> None:
    with pytest.raises(FunctionError) as caught:
        parse_ops(ops)
    assert caught.value.code == "deserialization_error"
    assert words in caught.value.message
