"""Per-route HTTP middleware: the functions an ``http`` binding names in ``middleware_function_ids``.

They are called one after the other, in the order listed, before the bound function, each with the
reference engine's input::

    {"phase": "preHandler", "request": {"method", "path_params", "query_params", "headers"}, "context": {}}

There is no body: middleware runs before the request body is read, so a refused upload never reaches a
function (and a client that sends ``Expect: 100-continue`` never sends it).
Each answers with ``{"action": "continue"}`` (the next middleware, then the function, runs) or
``{"action": "respond", "response": {"status_code", "headers", "body"}}`` (that is the answer; nothing
after it runs). As in the reference engine, any other result is logged and taken as ``continue``.
A middleware that fails is answered like a failed function (500 with its error's code and message); one
that does not answer within ``--http-timeout-s`` gets 504 ``MIDDLEWARE_TIMEOUT``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from iii.modules.http.responses import BadResponse, response_from_envelope

PHASE: Final = "preHandler"


class UnknownAction(ValueError):
    """A middleware answered neither ``continue`` nor ``respond`` (the message says what it returned)."""


def middleware_input(
    method: str, path_params: Mapping[str, str], query_params: Mapping[str, Any], headers: Mapping[str, str]
) -> dict[str, Any]:
    """The payload every middleware of a request is called with."""
    request = {"method": method, "path_params": path_params, "query_params": query_params, "headers": headers}
    return {"phase": PHASE, "request": request, "context": {}}


def verdict(result: Any) -> web.Response | None:
    """What a middleware's result means: None to go on, or the response that answers the request.

    Raises :class:`BadResponse` for a ``respond`` whose ``response`` is not a usable envelope, and
    :class:`UnknownAction` for any other result (the caller logs it and goes on, as the reference does).
    """
    action = result.get("action") if isinstance(result, dict) else None
    if action == "continue":
        return None
    if action == "respond":
        response = result.get("response")
        if not isinstance(response, dict):
            raise BadResponse(f"'respond' needs a 'response' object, got {response!r:.200}")
        return response_from_envelope(response)
    raise UnknownAction(f"{result!r:.200} (expected an object with 'action': 'continue' or 'respond')")
