"""What a registration's ``invocation`` may be: the URL policy (the reference's defaults, and what the settings
relax), host names checked on the addresses connected to, the config's shape, and the module's settings."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iii.modules.api import FunctionError, FunctionRegistration
from iii.modules.http_functions import HttpFunctionsModule, HttpFunctionsSettings
from iii.modules.http_functions.policy import UrlPolicy, is_private
from tests.modules.http_functions.conftest import StartModule
from tests.modules.http_functions.endpoints import Endpoints

DEFAULTS = HttpFunctionsSettings()


def check(url: str, **settings: Any) -> str | None:
    """The URL policy's refusal of ``url`` (None if it is accepted), with the defaults changed by ``settings``."""
    merged = {
        "allowlist": DEFAULTS.url_allowlist,
        "block_private_ips": DEFAULTS.block_private_ips,
        "require_https": DEFAULTS.require_https,
        **settings,
    }
    try:
        UrlPolicy(**merged).check(url)
    except FunctionError as error:
        assert error.code == "url_validation_failed"
        return error.message
    return None


def test_the_default_policy_is_the_references_https_only_and_no_private_address() -> None:
    assert (DEFAULTS.url_allowlist, DEFAULTS.block_private_ips, DEFAULTS.require_https) == (("*",), True, True)
    assert check("https://8.8.8.8/hook") is None
    assert check("https://hooks.example.com/x?token=abc") is None
    assert check("http://hooks.example.com/x") == "HTTPS is required: hooks.example.com is called over http"
    for private in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "[::1]", "[fd00::1]", "[::ffff:10.0.0.1]"):
        message = check(f"https://{private}/x")
        assert message is not None and message.startswith("Private IP blocked: "), private


def test_the_allowlist_matches_hosts_by_glob() -> None:
    allow = ("*.example.com", "api.partner.io")
    assert check("https://hooks.example.com/a", allowlist=allow) is None
    assert check("https://API.Partner.io/a", allowlist=allow) is None
    assert check("https://example.com/a", allowlist=allow) == "URL not in allowlist: example.com"
    assert check("https://evil.io/?next=api.partner.io", allowlist=allow) == "URL not in allowlist: evil.io"


@pytest.mark.parametrize("url", ["not a url", "ftp://example.com/x", "/relative/path", "https://", "http:///x"])
def test_what_is_not_an_http_url_is_refused(url: str) -> None:
    message = check(url, require_https=False)
    assert message is not None and message.startswith("Invalid URL")


def test_the_official_suites_settings_let_loopback_webhooks_in() -> None:
    loopback = {"allowlist": ("localhost", "127.0.0.1"), "block_private_ips": False, "require_https": False}
    assert check("http://127.0.0.1:4567/webhook", **loopback) is None
    assert check("http://localhost:4567/webhook", **loopback) is None
    assert check("http://10.0.0.1/webhook", **loopback) == "URL not in allowlist: 10.0.0.1"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "255.255.255.255",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.1",
        "0.0.0.0",
        "100.64.0.1",
        "::1",
        "::",
        "fd00::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a00:1",
        "2002:a00:1::",
    ],
)
def test_private_addresses_include_the_references_list(address: str) -> None:
    assert is_private(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "2606:4700:4700::1111"])
def test_public_addresses_are_not_private(address: str) -> None:
    assert not is_private(ipaddress.ip_address(address))


async def test_a_host_name_resolving_to_a_private_address_is_refused_when_called(
    start_module: StartModule, endpoints: Endpoints
) -> None:
    """The name passes the registration's check; the addresses it resolves to are checked when the call
    connects, so nothing reaches the endpoint."""
    _, host = await start_module(url_allowlist=["localhost"], require_https=False, block_private_ips=True)
    host.register_kind("invocation", "remote::local", {"url": f"http://localhost:{endpoints.port}/echo"})
    error = await host.call_error("remote::local", {})
    assert error.code == "url_validation_failed"
    assert error.message.startswith("Private IP blocked: localhost resolves to ")
    assert endpoints.requests == []

    _, allowed = await start_module(url_allowlist=["localhost"], require_https=False, block_private_ips=False)
    allowed.register_kind("invocation", "remote::local", {"url": f"http://localhost:{endpoints.port}/echo"})
    assert (await allowed.call("remote::local", {}))["method"] == "POST"


async def test_a_registration_the_policy_refuses_is_not_served(start_module: StartModule) -> None:
    _, host = await start_module(loopback=False)
    with pytest.raises(FunctionError) as refused:
        host.register_kind("invocation", "remote::f", {"url": "https://127.0.0.1/x"})
    assert (refused.value.code, refused.value.message) == ("url_validation_failed", "Private IP blocked: 127.0.0.1")
    assert "remote::f" not in host.functions


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("https://x", "'invocation' must be an object, got str"),
        ({}, "'invocation.url' must be a non-empty string"),
        ({"url": "https://x", "method": "FETCH"}, "'invocation.method' must be one of GET, POST, PUT, PATCH, DELETE"),
        ({"url": "https://x", "timeout_ms": 0}, "'invocation.timeout_ms' must be a positive integer, got 0"),
        ({"url": "https://x", "timeout_ms": "5"}, "'invocation.timeout_ms' must be a positive integer, got '5'"),
        ({"url": "https://x", "headers": ["a"]}, "'invocation.headers' must be an object of strings, got list"),
        ({"url": "https://x", "headers": {"Bad Name": "v"}}, "'invocation.headers' has an invalid header name"),
        ({"url": "https://x", "headers": {"X-A": "v\r\nX-B: w"}}, "'invocation.headers' value of 'X-A' has a line"),
        ({"url": "https://x", "headers": {"X-A": 1}}, "'invocation.headers' value of 'X-A' must be a string"),
        ({"url": "https://x", "auth": {"type": "basic"}}, "'invocation.auth.type' must be bearer, api_key or hmac"),
        ({"url": "https://x", "auth": {"type": "bearer"}}, "'invocation.auth.token_key' must name an environment"),
        ({"url": "https://x", "auth": {"type": "api_key", "value_key": "K"}}, "'invocation.auth.header' must be"),
    ],
)
async def test_a_config_of_the_wrong_shape_is_refused_with_what_is_wrong(
    start_module: StartModule, config: Any, message: str
) -> None:
    _, host = await start_module(loopback=False)
    with pytest.raises(FunctionError) as refused:
        host.register_kind("invocation", "remote::f", config)
    assert refused.value.code == "invalid_message"
    assert refused.value.message.startswith(message)
    assert "v\r\nX-B" not in refused.value.message


async def test_a_config_with_nulls_takes_the_defaults(start_module: StartModule, endpoints: Endpoints) -> None:
    _, host = await start_module()
    config = {"url": endpoints.url("/echo"), "method": None, "timeout_ms": None, "headers": None, "auth": None}
    host.register_kind("invocation", "remote::f", config)
    assert (await host.call("remote::f", {}))["method"] == "POST"


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"url_allowlist": []}, "url_allowlist must not be empty"),
        ({"url_allowlist": "*"}, "url_allowlist must be a list of non-empty strings"),
        ({"secret_keys": [""]}, "secret_keys must be a list of non-empty strings"),
        ({"require_https": "no"}, "require_https must be true or false"),
        ({"max_concurrent_calls": 0}, "max_concurrent_calls must be a positive integer"),
        ({"max_timeout_ms": 1.5}, "max_timeout_ms must be a positive integer"),
    ],
)
def test_settings_of_the_wrong_kind_are_refused(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        HttpFunctionsSettings(**settings)


def test_settings_from_a_toml_array_are_kept_as_tuples() -> None:
    settings = HttpFunctionsSettings(url_allowlist=["localhost", "127.0.0.1"], secret_keys=["HOOK_*"])
    assert (settings.url_allowlist, settings.secret_keys) == (("localhost", "127.0.0.1"), ("HOOK_*",))


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=24)
    | st.sampled_from(["https://example.com/x", "http://127.0.0.1:1/x", "POST", "bearer", "api_key", "hmac", "*"])
)
json_value = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
config_key = st.sampled_from(["url", "method", "timeout_ms", "headers", "auth", "type", "token_key", "header"])
fuzzed_config = json_value | st.dictionaries(config_key, json_value | st.dictionaries(config_key, json_value))


@settings(max_examples=300, deadline=None)
@given(config=fuzzed_config)
def test_any_config_is_accepted_or_refused_with_a_function_error(config: Any) -> None:
    """Whatever a worker sends as ``invocation``, the registration is accepted or refused with a code: never
    another exception."""
    module = HttpFunctionsModule(HttpFunctionsSettings(require_https=False))
    try:
        handler = module.accept(FunctionRegistration("fuzz::f", config, "w"))
    except FunctionError as refused:
        assert refused.code and refused.message
    else:
        assert callable(handler)


@pytest.mark.parametrize("name", ["\ud800", "A\x00B"], ids=["lone-surrogate", "nul"])
def test_a_variable_name_no_environment_can_hold_is_not_found(name: str) -> None:
    module = HttpFunctionsModule()
    with pytest.raises(FunctionError) as refused:
        module.accept(
            FunctionRegistration("f", {"url": "https://x", "auth": {"type": "bearer", "token_key": name}}, "w")
        )
    assert refused.value.code == "token_not_found"
