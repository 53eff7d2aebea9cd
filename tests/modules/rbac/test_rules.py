"""The RBAC listener's decisions without sockets: globs, expose_functions rules, the auth function's grants and
the order in which they decide."""

from __future__ import annotations

import time
from typing import Any

import pytest

from iii.modules.rbac import RbacSettings
from iii.modules.rbac.rules import (
    INFRASTRUCTURE_FUNCTIONS,
    OPEN,
    Grants,
    Verdict,
    decide,
    glob_match,
    grant_matches,
    json_equal,
    parse_rule,
    parse_rules,
    unwrap_match,
)


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("api::users", "api::users", True),
        ("api::users", "api::user", False),
        ("api::*", "api::users::list", True),
        ("api::*", "api::", True),
        ("api::*", "apix::users", False),
        ("*::public", "a::b::public", True),
        ("*::public", "a::public::x", False),
        ("*", "", True),
        ("a*b*c", "a-x-b-y-c", True),
        ("a*b*c", "a-c-b", False),
        ("ab*b", "ab", False),  # the first and last pieces may not overlap
        ("a*a", "aa", True),
        ("a*a", "a", False),
        ("*aa", "aaa", True),
        ("api::[x]?", "api::[x]?", True),  # only * is special
        ("api::[x]?", "api::xy", False),
    ],
)
def test_globs_have_one_special_character(pattern: str, value: str, expected: bool) -> None:
    assert glob_match(pattern, value) is expected


def test_a_hostile_function_id_is_matched_in_linear_time() -> None:
    """A regular expression built from many stars backtracks for ages on a long id that almost matches; ours
    looks for each piece once."""
    pattern = "*a" * 12 + "*b"
    value = "a" * 200_000
    started = time.perf_counter()
    assert not glob_match(pattern, value)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [('match("api::*")', "api::*"), ("match('api::*')", "api::*"), ('  match("x")  ', "x"), ("api::*", None)],
)
def test_match_wrappers(text: str, expected: str | None) -> None:
    assert unwrap_match(text) == expected


def test_grants_take_ids_and_globs_in_either_spelling() -> None:
    assert grant_matches("svc::get", "svc::get")
    assert grant_matches("svc::*", "svc::get")
    assert grant_matches('match("svc::*")', "svc::get")
    assert grant_matches('match("svc::get")', "svc::get")
    assert not grant_matches("svc::*", "other::get")
    assert not grant_matches("svc::ge", "svc::get")


def test_json_equality_keeps_true_apart_from_one() -> None:
    assert json_equal(True, True)
    assert not json_equal(True, 1)
    assert not json_equal(1, True)
    assert json_equal(1, 1.0)
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]})
    assert not json_equal({"a": [1]}, {"a": [True]})
    assert not json_equal("1", 1)
    assert not json_equal(None, False)


def test_expose_rules_as_the_toml_file_writes_them() -> None:
    rules = parse_rules(
        [
            'match("api::*")',
            {"match": "*::public"},
            {"metadata": {"public": True, "tier": 'match("free-*")'}},
            {"match": "svc::*", "namespace": "orders"},
        ]
    )
    by_id, by_table, by_metadata, elsewhere = rules
    assert by_id.matches("api::x", None) and not by_id.matches("x::api", None)
    assert by_table.matches("a::public", None)
    assert by_metadata.matches("any", {"public": True, "tier": "free-2", "other": 1})
    assert not by_metadata.matches("any", {"public": 1, "tier": "free-2"})  # 1 is not true
    assert not by_metadata.matches("any", {"public": True, "tier": "paid"})
    assert not by_metadata.matches("any", {"public": True})  # every key must be there
    assert not by_metadata.matches("any", None)
    assert not elsewhere.matches("svc::get", None)  # only "default" exists in this engine
    assert [rule.describe() for rule in rules] == [
        'match("api::*")',
        'match("*::public")',
        {"metadata": {"public": True, "tier": 'match("free-*")'}},
        {"match": "svc::*", "namespace": "orders"},
    ]


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ("api::*", 'expected match("pattern")'),
        (7, 'expected match("pattern") or a table'),
        ({"match": "a", "metadata": {"x": 1}}, "either match or metadata"),
        ({}, "either match or metadata"),
        ({"namesapce": "x", "match": "a"}, "unknown key(s) namesapce"),
        ({"metadata": {}}, "at least one key"),
        ({"match": ""}, "non-empty string"),
    ],
)
def test_a_rule_that_is_not_one_is_refused_with_its_place(item: Any, problem: str) -> None:
    with pytest.raises(ValueError, match="expose_functions\\[1\\]") as caught:
        parse_rules(['match("ok")', item])
    assert problem in str(caught.value)


def test_settings_refuse_bad_function_ids_and_rules_together() -> None:
    with pytest.raises(ValueError) as caught:
        RbacSettings(auth_function_id="", expose_functions=["nope"], hook_timeout_s=0)  # type: ignore[arg-type]
    text = str(caught.value)
    assert "auth_function_id must be a non-empty function id" in text
    assert "expose_functions[0]" in text
    assert "hook_timeout_s must be a positive number" in text
    settings = RbacSettings(expose_functions=['match("a::*")'])  # type: ignore[arg-type]
    assert settings.expose_functions == (parse_rule('match("a::*")', "x"),)


EXPOSE = parse_rules(['match("api::*")', {"metadata": {"public": True}}])


def test_nothing_is_allowed_that_nothing_allows() -> None:
    assert decide("internal::secret", None, OPEN, EXPOSE) is Verdict.NOT_EXPOSED
    assert decide("internal::secret", None, OPEN, ()) is Verdict.NOT_EXPOSED
    assert decide("engine::functions::list", None, OPEN, ()) is Verdict.NOT_EXPOSED  # discovery is not infrastructure


def test_what_allows_a_function() -> None:
    assert decide("api::users", None, OPEN, EXPOSE) is Verdict.ALLOWED
    assert decide("x::y", {"public": True}, OPEN, EXPOSE) is Verdict.ALLOWED
    assert decide("x::y", None, Grants(allowed_functions=frozenset({"x::y"})), EXPOSE) is Verdict.ALLOWED
    assert decide("x::y", None, Grants(namespace_grants=("x::*",)), EXPOSE) is Verdict.ALLOWED
    for function_id in INFRASTRUCTURE_FUNCTIONS:
        assert decide(function_id, None, OPEN, ()) is Verdict.ALLOWED


def test_a_denial_wins_over_every_grant() -> None:
    grants = Grants(
        allowed_functions=frozenset({"api::users", "engine::log::info"}),
        forbidden_functions=frozenset({"api::users", "engine::log::info", "x::y"}),
        namespace_grants=("api::*",),
    )
    assert decide("api::users", None, grants, EXPOSE) is Verdict.FORBIDDEN  # exposed and allowed, but forbidden
    assert decide("engine::log::info", None, grants, EXPOSE) is Verdict.FORBIDDEN  # infrastructure too
    assert decide("x::y", {"public": True}, grants, EXPOSE) is Verdict.FORBIDDEN
    assert decide("api::other", None, grants, EXPOSE) is Verdict.ALLOWED  # exact ids only


def test_allowed_functions_are_exact_ids() -> None:
    grants = Grants(allowed_functions=frozenset({"svc::*"}))
    assert decide("svc::get", None, grants, ()) is Verdict.NOT_EXPOSED
    assert decide("svc::*", None, grants, ()) is Verdict.ALLOWED


def test_an_auth_result_as_the_sdks_dump_it() -> None:
    """The official SDKs' ``AuthResult().model_dump()`` sends every field, null for the unset ones."""
    grants = Grants.from_auth_result(
        {
            "namespaces": {"default": ["svc::*"], "orders": ["o::*"]},
            "allowed_functions": ["a::b"],
            "forbidden_functions": ["c::d"],
            "allowed_trigger_types": None,
            "allow_trigger_type_registration": True,
            "allow_function_registration": True,
            "function_registration_prefix": "partner",
            "context": {"user_id": "u1"},
        }
    )
    assert grants == Grants(
        allowed_functions=frozenset({"a::b"}),
        forbidden_functions=frozenset({"c::d"}),
        namespace_grants=("svc::*",),
        allowed_trigger_types=None,
        allow_trigger_type_registration=True,
        function_registration_prefix="partner",
        context={"user_id": "u1"},
    )
    assert Grants.from_auth_result({}) == Grants()
    assert Grants.from_auth_result({"allowed_trigger_types": ["cron"]}).allowed_trigger_types == frozenset({"cron"})


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ([], "must be an object"),
        ({"allowed_functions": "a::b"}, "allowed_functions must be a list of strings"),
        ({"forbidden_functions": [1]}, "forbidden_functions must be a list of strings"),
        ({"allow_function_registration": "yes"}, "allow_function_registration must be true or false"),
        ({"function_registration_prefix": ""}, "function_registration_prefix must be a non-empty string"),
        ({"context": [1]}, "context must be an object"),
        ({"namespaces": ["x"]}, "namespaces must be an object"),
    ],
)
def test_an_auth_result_of_the_wrong_shape_is_refused(answer: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Grants.from_auth_result(answer)
