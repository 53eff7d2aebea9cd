"""Helpers for the http trigger tests: bind functions to routes on a real engine and wait until they serve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iii import III


def bind(client: III, function_id: str, handler: Callable[..., Any], method: str, api_path: str) -> None:
    """Register ``handler`` and bind it to ``method api_path`` (fire-and-forget, see :func:`routes_ready`)."""
    client.register_function(function_id, handler)
    client.register_trigger(
        {"type": "http", "function_id": function_id, "config": {"api_path": api_path, "http_method": method}}
    )


def routes_ready(client: III) -> dict[str, Any]:
    """Return once the engine has handled every binding this client sent before (it handles one worker's
    messages in order, so the answer to a later call comes after them)."""
    listing: dict[str, Any] = client.trigger({"function_id": "engine::triggers::list", "payload": {}})
    return listing
