"""The observer filter language: what an observer's ``filters`` select, its normal form, and what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from iii.engine.filters import MAX_NODES, FilterError, compile_filter

EVENT: dict[str, Any] = {
    "input": {"amount": 750, "sku": "A-1", "tags": ["vip", "eu"], "items": [{"n": 1}, {"n": 5}], "note": None},
    "output": {"charged": 750},
    "caller": {"function_id": "shop::checkout", "worker_name": "web"},
}


@pytest.mark.parametrize(
    ("source", "matches"),
    [
        ({}, True),
        ({"input.amount": {"$gte": 500}}, True),
        ({"input.amount": {"$gt": 750}}, False),
        ({"input.amount": {"$lt": 750.5, "$gte": 750}}, True),
        ({"input.amount": {"$eq": 750.0}}, True),  # numbers compare as doubles
        ({"input.amount": {"$eq": "750"}}, False),  # no coercion between kinds
        ({"input.sku": {"$prefix": "A-"}}, True),
        ({"input.sku": {"$gt": "A"}}, True),  # strings order by code point
        ({"input.sku": {"$gt": 1}}, False),  # a number bound never orders a string
        ({"input.sku": {"$in": ["B-2", "A-1"]}}, True),
        ({"input.sku": {"$nin": ["B-2", "A-1"]}}, False),
        ({"input.missing": {"$ne": 1}}, True),  # absent is not equal to anything
        ({"input.missing": {"$nin": [1]}}, True),
        ({"input.missing": {"$eq": None}}, False),  # absent is not null
        ({"input.note": {"$eq": None}}, True),
        ({"input.note": {"$exists": True}}, True),
        ({"input.missing": {"$exists": False}}, True),
        ({"output.charged": {"$exists": True}}, True),
        ({"error": {"$exists": True}}, False),  # an absent root
        ({"input.tags.1": {"$eq": "eu"}}, True),  # a canonical index selects an element
        ({"input.tags.01": {"$exists": True}}, False),  # a non-canonical one does not
        ({"input.tags": {"$any": {"$eq": "vip"}}}, True),
        ({"input.tags": {"$any": {"$eq": "us"}}}, False),
        ({"input.items": {"$any": {"@.n": {"$gte": 5}}}}, True),
        ({"input.items": {"$any": {"@.n": {"$gt": 5}}}}, False),
        ({"input.items": {"$any": {}}}, True),  # any element of a non-empty array
        ({"input.sku": {"$any": {}}}, False),  # not an array
        ({"$or": [{"input.amount": {"$lt": 10}}, {"caller.worker_name": {"$eq": "web"}}]}, True),
        ({"$not": {"input.amount": {"$gte": 500}}}, False),
        ({"$and": [{"input.amount": {"$gte": 500}}, {"input.sku": {"$eq": "B-2"}}]}, False),
        ({"input.tags": {"$eq": ["vip", "eu"]}}, True),
        ({"input.tags": {"$eq": ["eu", "vip"]}}, False),  # arrays keep their order
        ({"output": {"$eq": {"charged": 750}}}, True),  # objects compare whole, key order aside
        ({"output": {"$eq": {"charged": 750, "extra": 1}}}, False),
    ],
)
def test_a_filter_selects_what_its_operators_say(source: dict[str, Any], matches: bool) -> None:
    assert compile_filter(source).matches(EVENT) is matches


def test_booleans_are_not_numbers() -> None:
    assert compile_filter({"input.flag": {"$eq": 1}}).matches({"input": {"flag": True}}) is False
    assert compile_filter({"input.flag": {"$gte": 0}}).matches({"input": {"flag": False}}) is False
    assert compile_filter({"input.flag": {"$eq": True}}).matches({"input": {"flag": True}}) is True


def test_escaped_dots_name_keys_that_hold_dots() -> None:
    assert compile_filter({"input.a\\.b": {"$eq": 1}}).matches({"input": {"a.b": 1}})
    assert not compile_filter({"input.a.b": {"$eq": 1}}).matches({"input": {"a.b": 1}})


def test_the_normal_form_is_one_and_of_single_clauses_with_nested_ands_flattened() -> None:
    assert compile_filter(None).normal == {}
    assert compile_filter({}).normal == {}
    assert compile_filter({"input.n": {"$gte": 2}}).normal == {"$and": [{"input.n": {"$gte": 2}}]}
    c = {"input.c": {"$exists": True}}
    nested = compile_filter({"input.a": {"$eq": 1}, "$and": [{"input.b": {"$eq": 2}}, {"$and": [c]}]})
    assert nested.normal == {"$and": [{"input.a": {"$eq": 1}}, {"input.b": {"$eq": 2}}, c]}
    alternatives = compile_filter({"$or": [{"input.a": {"$eq": 1}}, {}]})
    assert alternatives.normal == {"$and": [{"$or": [{"$and": [{"input.a": {"$eq": 1}}]}, {}]}]}


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ([], "must be a JSON object"),
        ({"input.op": "insert"}, "literal values are not allowed"),
        ({"payload.op": {"$eq": 1}}, "unknown root `payload`"),
        ({"input..op": {"$eq": 1}}, "empty segment"),
        ({"input.op\\x": {"$eq": 1}}, "escapes"),
        ({"$eq": 1}, "needs a path"),
        ({"$where": "1"}, "unknown operator `$where`"),
        ({"input.n": {"$regex": "a"}}, "unknown operator `$regex`"),
        ({"input.n": {"$in": 1}}, "takes an array"),
        ({"input.n": {"$in": list(range(257))}}, "limit 256"),
        ({"input.n": {"$gt": True}}, "a number or a string"),
        ({"input.n": {"$gt": 2**60}}, "outside ±2^53"),
        ({"input.n": {"$exists": 1}}, "a boolean"),
        ({"input.n": {}}, "empty operator object"),
        ({"input.n": {"$prefix": 1}}, "a string"),
        ({"$or": []}, "non-empty array"),
        ({"$not": [1]}, "filter object"),
        ({"input.items": {"$any": {"input.n": {"$eq": 1}}}}, "start at `@`"),
        ({"@.n": {"$eq": 1}}, "unknown root `@`"),
        ({"input.x": {"$eq": "y" * 9000}}, "8192 bytes"),
    ],
)
def test_an_invalid_filter_is_refused_with_a_message_naming_the_problem(source: Any, fragment: str) -> None:
    with pytest.raises(FilterError) as raised:
        compile_filter(source)
    assert fragment in str(raised.value)
    assert raised.value.code == "INVALID_FILTER"


def test_depth_and_node_limits_bound_the_work_of_one_filter() -> None:
    deep: dict[str, Any] = {"input.n": {"$eq": 1}}
    for _ in range(8):
        deep = {"$not": deep}
    with pytest.raises(FilterError, match="nested deeper"):
        compile_filter(deep)
    many = {f"input.f{i}": {"$eq": i} for i in range(MAX_NODES + 1)}
    with pytest.raises(FilterError, match="operator / clause nodes"):
        compile_filter(many)


def test_evaluation_never_raises_whatever_the_event_holds() -> None:
    compiled = compile_filter({"input.n": {"$gt": 1}})
    assert compiled.matches({"input": {"n": 10**400}}) is False  # no double holds it: no match, no error
    assert compiled.matches({"input": "not an object"}) is False
    assert compiled.matches({}) is False
