"""The http trigger's route table: patterns, matching order, conflicts, wrong methods."""

from __future__ import annotations

import pytest

from iii.modules.http.routes import Match, Route, RouteError, RouteTable, WrongMethod, parse_method, parse_pattern


def route(binding_id: str, method: str, api_path: str, function_id: str = "f") -> Route:
    return Route(binding_id, method, parse_pattern(api_path), function_id)


def test_patterns_are_normalized_and_name_their_parameters() -> None:
    pattern = parse_pattern("users//:id/files/{name}/")
    assert pattern.path == "/users/:id/files/:name"
    assert pattern.params == ("id", "name")
    assert parse_pattern("/").path == "/"


@pytest.mark.parametrize("api_path", [None, "", "  ", 7, "/a/:", "/a/:b-c", "/a/:x/:x"])
def test_bad_patterns_are_refused_with_a_reason(api_path: object) -> None:
    with pytest.raises(RouteError, match="api_path"):
        parse_pattern(api_path)


def test_methods_default_to_get_and_must_be_known() -> None:
    assert parse_method(None) == "GET"
    assert parse_method("post") == "POST"
    with pytest.raises(RouteError, match="http_method"):
        parse_method("BREW")


def test_parameters_capture_decoded_segments() -> None:
    table = RouteTable()
    table.add(route("b1", "GET", "/users/:id/files/:name"))
    found = table.match("GET", "/users/42/files/a%20b.txt")
    assert isinstance(found, Match)
    assert found.path_params == {"id": "42", "name": "a b.txt"}
    assert table.match("GET", "/users/42/files") is None
    assert table.match("GET", "/users/42/files/x/y") is None


def test_a_literal_segment_beats_a_parameter_whatever_the_order_of_binding() -> None:
    table = RouteTable()
    table.add(route("param", "GET", "/users/:id", "by_id"))
    table.add(route("literal", "GET", "/users/me", "me"))
    me = table.match("GET", "/users/me")
    other = table.match("GET", "/users/7")
    assert isinstance(me, Match) and me.route.function_id == "me"
    assert isinstance(other, Match) and other.route.function_id == "by_id"


def test_same_shape_conflicts_but_rebinding_the_same_id_replaces() -> None:
    table = RouteTable()
    assert table.add(route("b1", "GET", "/a/:x", "first")) is None
    conflict = table.add(route("b2", "GET", "/a/:y", "second"))
    assert conflict is not None and conflict.function_id == "first"
    assert table.add(route("b3", "POST", "/a/:y", "post")) is None  # another method is another route
    assert table.add(route("b1", "GET", "/a/:z", "again")) is None
    found = table.match("GET", "/a/1")
    assert isinstance(found, Match) and found.route.function_id == "again"
    assert len(table) == 2


def test_a_known_path_with_another_method_says_which_methods_it_takes() -> None:
    table = RouteTable()
    table.add(route("b1", "GET", "/files/:name"))
    table.add(route("b2", "PUT", "/files/:name"))
    assert table.match("DELETE", "/files/x") == WrongMethod(["GET", "HEAD", "PUT"])
    assert table.match("DELETE", "/nothing") is None


def test_head_is_served_by_the_get_route_unless_a_head_route_is_bound() -> None:
    table = RouteTable()
    table.add(route("get", "GET", "/files/:name", "get_file"))
    found = table.match("HEAD", "/files/a")
    assert isinstance(found, Match) and found.route.function_id == "get_file"
    table.add(route("head", "HEAD", "/files/:name", "head_file"))
    found = table.match("HEAD", "/files/a")
    assert isinstance(found, Match) and found.route.function_id == "head_file"


def test_removed_routes_stop_matching() -> None:
    table = RouteTable()
    table.add(route("b1", "GET", "/a"))
    assert table.remove("b1") is not None
    assert table.match("GET", "/a") is None
    assert table.remove("b1") is None
