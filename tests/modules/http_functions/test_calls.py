"""Calls of HTTP-invoked functions, against a real HTTP server on loopback: the request the engine sends, what
each answer means, credentials, timeouts, redirects, the bound on calls at once and the response size."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import uuid

import pytest

from iii.modules.api import FunctionError
from iii.modules.http_functions.endpoint import parse_endpoint
from tests.modules.http_functions.conftest import StartModule
from tests.modules.http_functions.endpoints import Endpoints

SECRET = "s3cr3t-Value-42"


async def test_a_call_sends_the_payload_as_json_with_the_reference_headers(
    start_module: StartModule, endpoints: Endpoints
) -> None:
    _, host = await start_module()
    config = {"url": endpoints.url("/echo"), "method": "PUT", "headers": {"X-Custom": "present", "X-Another": "123"}}
    host.register_kind("invocation", "remote::echo", config)
    before = int(time.time())
    result = await host.call("remote::echo", {"hello": "world", "n": [1, 2]})
    assert result == {"method": "PUT", "body": '{"hello":"world","n":[1,2]}'}

    [request] = endpoints.requests
    assert json.loads(request.body) == {"hello": "world", "n": [1, 2]}
    headers = request.headers
    assert headers["Content-Type"] == "application/json"
    assert (headers["X-Custom"], headers["X-Another"]) == ("present", "123")
    assert headers["x-iii-Function-Path"] == "remote::echo"
    assert uuid.UUID(headers["x-iii-Invocation-ID"])
    assert before <= int(headers["x-iii-Timestamp"]) <= int(time.time())
    assert "Authorization" not in headers and "Cookie" not in headers


async def test_the_method_defaults_to_post_and_each_call_has_its_own_invocation_id(
    start_module: StartModule, endpoints: Endpoints
) -> None:
    _, host = await start_module()
    host.register_kind("invocation", "remote::echo", {"url": endpoints.url("/echo")})
    await host.call("remote::echo", None)
    await host.call("remote::echo", {})
    first, second = endpoints.requests
    assert (first.method, first.body, second.body) == ("POST", b"null", b"{}")
    assert first.headers["x-iii-Invocation-ID"] != second.headers["x-iii-Invocation-ID"]


async def test_the_engines_headers_replace_a_functions_headers_of_the_same_name(
    start_module: StartModule, endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", SECRET)
    _, host = await start_module()
    headers = {"x-iii-function-path": "spoofed", "authorization": "Bearer forged", "content-type": "application/x+json"}
    config = {"url": endpoints.url("/echo"), "headers": headers, "auth": {"type": "bearer", "token_key": "HOOK_TOKEN"}}
    host.register_kind("invocation", "remote::echo", config)
    await host.call("remote::echo", {})
    [request] = endpoints.requests
    assert request.headers.getall("x-iii-Function-Path") == ["remote::echo"]
    assert request.headers.getall("Authorization") == [f"Bearer {SECRET}"]
    assert request.headers.getall("Content-Type") == ["application/x+json"]  # the function's own choice


@pytest.mark.parametrize(
    ("path", "result"),
    [("/echo", {"method": "POST", "body": '{"a":1}'}), ("/empty", None)],
    ids=["json", "no-content"],
)
async def test_a_2xx_answer_is_the_result(
    start_module: StartModule, endpoints: Endpoints, path: str, result: object
) -> None:
    _, host = await start_module()
    host.register_kind("invocation", "remote::f", {"url": endpoints.url(path)})
    assert await host.call("remote::f", {"a": 1}) == result


@pytest.mark.parametrize(
    ("path", "code", "message"),
    [
        ("/text", "invalid_response", "HTTP 200: the body is not JSON"),
        ("/upstream-error", "UPSTREAM_ERROR", "upstream failed"),
        ("/plain-error", "http_error", "HTTP 400 Bad Request"),
        ("/odd-error", "http_error", "HTTP request failed"),
    ],
    ids=["not-json", "error-shape", "plain-error", "error-not-an-object"],
)
async def test_other_answers_are_errors_mapped_as_the_reference_does(
    start_module: StartModule, endpoints: Endpoints, path: str, code: str, message: str
) -> None:
    module, host = await start_module()
    host.register_kind("invocation", "remote::f", {"url": endpoints.url(path)})
    error = await host.call_error("remote::f", {})
    assert error.code == code
    assert error.message.startswith(message)
    assert module.outcomes[code] == 1


async def test_a_redirect_is_not_followed_its_answer_is_the_result(
    start_module: StartModule, endpoints: Endpoints
) -> None:
    elsewhere = Endpoints()
    await elsewhere.start()
    try:
        endpoints.redirect_to = elsewhere.url("/echo")
        _, host = await start_module()
        host.register_kind("invocation", "remote::moved", {"url": endpoints.url("/moved")})
        assert await host.call("remote::moved", {"a": 1}) == {"moved": True}
        assert [r.path for r in endpoints.requests] == ["/moved"]
        assert elsewhere.requests == []
    finally:
        await elsewhere.stop()


async def test_a_connection_that_fails_is_http_request_failed(start_module: StartModule) -> None:
    _, host = await start_module()
    host.register_kind("invocation", "remote::gone", {"url": "http://127.0.0.1:1/nothing"})
    error = await host.call_error("remote::gone", {})
    assert error.code == "http_request_failed"
    assert "127.0.0.1:1" in error.message


async def test_a_call_without_a_response_within_its_timeout_fails(
    start_module: StartModule, endpoints: Endpoints
) -> None:
    module, host = await start_module(max_timeout_ms=300)
    host.register_kind("invocation", "remote::slow", {"url": endpoints.url("/hold"), "timeout_ms": 200})
    host.register_kind("invocation", "remote::capped", {"url": endpoints.url("/hold"), "timeout_ms": 60_000})
    for function_id, limit_ms in (("remote::slow", 200), ("remote::capped", 300)):
        started = time.monotonic()
        error = await host.call_error(function_id, {})
        elapsed = time.monotonic() - started
        assert (error.code, error.message) == (
            "http_request_failed",
            f"{function_id}: no response within {limit_ms} ms",
        )
        assert limit_ms / 1000 <= elapsed < limit_ms / 1000 + 2
    assert module.in_progress == 0


async def test_at_most_max_concurrent_calls_are_out_at_once(start_module: StartModule, endpoints: Endpoints) -> None:
    module, host = await start_module(max_concurrent_calls=2)
    host.register_kind("invocation", "remote::hold", {"url": endpoints.url("/hold"), "timeout_ms": 20_000})
    host.register_kind("invocation", "remote::impatient", {"url": endpoints.url("/echo"), "timeout_ms": 100})
    calls = [asyncio.ensure_future(host.call("remote::hold", {"n": n})) for n in range(5)]
    await endpoints.wait_held(2)
    assert (module.in_progress, module.waiting) == (2, 3)

    error = await host.call_error("remote::impatient", {})  # no slot frees within its timeout
    assert error.code == "limit_exceeded"
    assert "max_concurrent_calls" in error.message

    endpoints.release.set()
    assert await asyncio.wait_for(asyncio.gather(*calls), 10) == [{"released": True}] * 5
    assert endpoints.most_held == 2
    assert len([r for r in endpoints.requests if r.path == "/hold"]) == 5
    assert (module.in_progress, module.waiting) == (0, 0)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_response_over_max_response_bytes_fails(
    start_module: StartModule, endpoints: Endpoints, chunked: bool
) -> None:
    _, host = await start_module(max_response_bytes=1000)
    query = "bytes=5000" + ("&chunked=1" if chunked else "")
    host.register_kind("invocation", "remote::big", {"url": endpoints.url(f"/big?{query}")})
    error = await host.call_error("remote::big", {})
    assert (error.code, error.message) == (
        "http_response_failed",
        "HTTP 200: the body is over 1000 bytes (max_response_bytes)",
    )


# --- credentials -------------------------------------------------------------------------------------------


async def test_bearer_and_api_key_credentials_come_from_the_engines_environment(
    start_module: StartModule, endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", SECRET)
    monkeypatch.setenv("HOOK_KEY", "key-123")
    _, host = await start_module()
    bearer = {"type": "bearer", "token_key": "HOOK_TOKEN"}
    api_key = {"type": "api_key", "header": "X-Api-Key", "value_key": "HOOK_KEY"}
    host.register_kind("invocation", "remote::bearer", {"url": endpoints.url("/echo"), "auth": bearer})
    host.register_kind("invocation", "remote::key", {"url": endpoints.url("/echo"), "auth": api_key})
    await host.call("remote::bearer", {})
    await host.call("remote::key", {})
    first, second = endpoints.requests
    assert first.headers["Authorization"] == f"Bearer {SECRET}"
    assert second.headers["X-Api-Key"] == "key-123"
    assert "Authorization" not in second.headers


async def test_an_hmac_signature_signs_the_timestamp_and_the_body(
    start_module: StartModule, endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    _, host = await start_module()
    auth = {"type": "hmac", "secret_key": "HOOK_SECRET"}
    host.register_kind("invocation", "remote::signed", {"url": endpoints.url("/echo"), "auth": auth})
    await host.call("remote::signed", {"amount": 10})
    [request] = endpoints.requests
    signed = f"{request.headers['x-iii-Timestamp']}:{base64.b64encode(request.body).decode()}".encode()
    expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    assert request.headers["x-iii-Signature"] == expected
    assert "Authorization" not in request.headers


async def test_secrets_appear_in_no_log_and_no_error_message(
    start_module: StartModule,
    endpoints: Endpoints,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Even an endpoint that repeats the credentials in its error gets them redacted from what callers see."""
    monkeypatch.setenv("HOOK_TOKEN", SECRET)
    module, host = await start_module()
    with caplog.at_level(logging.DEBUG):
        auth = {"type": "bearer", "token_key": "HOOK_TOKEN"}
        host.register_kind(
            "invocation", "remote::leaky", {"url": endpoints.url("/echo-credentials-error"), "auth": auth}
        )
        error = await host.call_error("remote::leaky", {})
        logging.getLogger("test").debug("the module's state: %r %r", module.snapshot(), list(module.metrics()))
        endpoint = parse_endpoint(
            {"url": "https://x", "headers": {"X-Key": SECRET}, "auth": auth},
            default_timeout_ms=1,
            max_timeout_ms=1,
            secret_keys=("*",),
        )
        logging.getLogger("test").debug("an endpoint as code may show it: %r", endpoint)
    [request] = endpoints.requests
    assert request.headers["Authorization"] == f"Bearer {SECRET}"  # it was sent
    assert error.code == "denied:Bearer <redacted>"
    assert error.message == "the credentials Bearer <redacted> are not valid"
    assert "function=remote::leaky failed" in caplog.text  # the failure was logged, without the secret
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("auth", "code", "message"),
    [
        ({"type": "bearer", "token_key": "MISSING_TOKEN"}, "token_not_found", "Token not found: MISSING_TOKEN"),
        (
            {"type": "api_key", "header": "X-Key", "value_key": "MISSING_KEY"},
            "api_key_not_found",
            "API key not found: MISSING_KEY",
        ),
        ({"type": "hmac", "secret_key": "MISSING_SECRET"}, "secret_not_found", "Secret not found: MISSING_SECRET"),
        (
            {"type": "bearer", "token_key": "III_ENGINE_REDIS_URL"},
            "token_not_found",
            "Token not found: III_ENGINE_REDIS_URL is not one the engine gives out (secret_keys)",
        ),
        (
            {"type": "bearer", "token_key": "OTHER_TOKEN"},
            "token_not_found",
            "Token not found: OTHER_TOKEN is not one the engine gives out (secret_keys)",
        ),
    ],
    ids=["bearer-missing", "api-key-missing", "hmac-missing", "engine-setting", "not-in-secret-keys"],
)
async def test_credentials_the_engine_does_not_have_or_give_out_are_refused_when_registered(
    start_module: StartModule,
    endpoints: Endpoints,
    monkeypatch: pytest.MonkeyPatch,
    auth: dict[str, str],
    code: str,
    message: str,
) -> None:
    monkeypatch.delenv("MISSING_TOKEN", raising=False)
    monkeypatch.delenv("MISSING_KEY", raising=False)
    monkeypatch.delenv("MISSING_SECRET", raising=False)
    monkeypatch.setenv("III_ENGINE_REDIS_URL", "redis://:" + SECRET + "@127.0.0.1")
    monkeypatch.setenv("OTHER_TOKEN", SECRET)
    _, host = await start_module(secret_keys=["MISSING_*", "III_ENGINE_*"])
    with pytest.raises(FunctionError) as refused:
        host.register_kind("invocation", "remote::f", {"url": endpoints.url("/echo"), "auth": auth})
    assert (refused.value.code, refused.value.message) == (code, message)
    assert "remote::f" not in host.functions
