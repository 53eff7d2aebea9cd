"""Fixtures for the http_functions module: a real endpoint server on loopback, and started modules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from iii.modules.http_functions import HttpFunctionsModule, HttpFunctionsSettings
from tests.modules.conftest import RunModule
from tests.modules.local_host import LocalHost

LOOPBACK = {"url_allowlist": ["127.0.0.1"], "block_private_ips": False, "require_https": False}
"""The settings that let functions call the endpoints on 127.0.0.1 (the defaults refuse them)."""

StartModule = Callable[..., Awaitable[tuple[HttpFunctionsModule, LocalHost]]]


@pytest.fixture
def start_module(run_module: RunModule) -> StartModule:
    """``module, host = await start_module(max_concurrent_calls=2)``: the module with the loopback settings
    (unless ``loopback=False``) and these, started on its own host."""

    async def start(loopback: bool = True, **settings: Any) -> tuple[HttpFunctionsModule, LocalHost]:
        module = HttpFunctionsModule(HttpFunctionsSettings(**{**(LOOPBACK if loopback else {}), **settings}))
        return module, await run_module(module)

    return start
