"""Turning what a function returns into an HTTP response, and request parts into payload fields."""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict, MultiDict

from iii.modules.http.responses import (
    BadResponse,
    error_response,
    is_json,
    query_params,
    request_headers,
    response_from_value,
)


def body_of(value: object) -> tuple[int, dict[str, str], bytes]:
    response = response_from_value(value)
    assert isinstance(response.body, bytes)
    return response.status, dict(response.headers), response.body


def test_a_response_object_sets_status_headers_and_a_json_body() -> None:
    status, headers, body = body_of({"status_code": 201, "headers": {"X-Id": "7"}, "body": {"ok": True}})
    assert status == 201
    assert headers["X-Id"] == "7" and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"ok": True}


def test_header_lines_and_a_text_body_with_its_own_content_type() -> None:
    status, headers, body = body_of(
        {"status_code": 200, "headers": ["Content-Type: text/xml", "X-A: 1"], "body": "<r/>"}
    )
    assert (status, headers["Content-Type"], headers["X-A"], body) == (200, "text/xml", "1", b"<r/>")


def test_any_other_value_is_a_json_body_and_an_absent_body_is_empty() -> None:
    assert body_of([1, 2]) == (200, {"Content-Type": "application/json"}, b"[1,2]")
    status, _, body = body_of({"status_code": 204})
    assert (status, body) == (204, b"")


def test_the_function_cannot_frame_the_body_itself() -> None:
    _, headers, body = body_of(
        {"status_code": 200, "headers": {"Content-Length": "999", "Transfer-Encoding": "chunked"}, "body": "x"}
    )
    assert "Transfer-Encoding" not in headers and body == b'"x"'


@pytest.mark.parametrize(
    "value",
    [
        {"id": 7, "title": "Hello", "body": "Post text"},
        {"headers": ["date", "amount"], "rows": [["2026-01-01", 3]]},
        {"body": "only a body"},
        {"headers": {"X-A": "1"}},
        {"status_code": 200, "body": "x", "extra": True},
        {"status_code": "active", "title": "a record"},
    ],
)
def test_data_that_looks_like_a_response_is_sent_as_json_data(value: object) -> None:
    status, headers, body = body_of(value)
    assert (status, headers, json.loads(body)) == (200, {"Content-Type": "application/json"}, value)


@pytest.mark.parametrize(
    "value",
    [
        {"status_code": 99},
        {"status_code": "200"},
        {"status_code": True},
        {"status_code": 200, "headers": "X: y"},
        {"status_code": 200, "headers": ["no colon"]},
        {"status_code": 200, "headers": {"X-Bad": "a\r\nInjected: 1"}},
        {"status_code": 200, "headers": {"Bad Name": "v"}},
        {"status_code": 200, "headers": {"X": None}},
    ],
)
def test_unusable_responses_are_refused_with_a_reason(value: object) -> None:
    with pytest.raises(BadResponse):
        response_from_value(value)


def test_error_responses_have_one_shape_and_server_errors_an_id() -> None:
    client_error = json.loads(error_response(404, "NOT_FOUND", "no route").body)  # type: ignore[arg-type]
    server_error = json.loads(error_response(500, "invocation_failed", "boom").body)  # type: ignore[arg-type]
    assert client_error == {"error": {"code": "NOT_FOUND", "message": "no route"}}
    assert server_error["error"]["code"] == "invocation_failed" and len(server_error["error"]["error_id"]) == 12


def test_request_parts() -> None:
    assert is_json("application/json; charset=utf-8") and is_json("application/vnd.api+json")
    assert not is_json("text/plain") and not is_json("")
    assert query_params(MultiDict([("a", "1"), ("b", "2"), ("a", "3")])) == {"a": ["1", "3"], "b": "2"}
    assert request_headers(CIMultiDict([("Accept", "a"), ("X-N", "1"), ("accept", "b")])) == {
        "accept": "a, b",
        "x-n": "1",
    }
