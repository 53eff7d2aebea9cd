"""The functions a worker serves, and where each stands with the engine (:data:`FunctionStatus`)."""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from iii.protocol.messages import JSON_NULL, RegisterFunction
from iii.sdk.payloads import encode_payload

log = logging.getLogger("iii.sdk")

FunctionStatus = Literal["registering", "active", "standby", "refused", "unregistered"]
"""Where a registered function stands with the engine:

* ``registering``: sent, not answered yet (or not connected);
* ``active``: this worker serves it;
* ``standby``: another worker serves it; this one was refused and takes over when that one leaves;
* ``refused``: the id is built into the engine, or the engine refused the registration for good (an HTTP-invoked
  function whose URL it does not allow: the log says why);
* ``unregistered``: withdrawn with :meth:`FunctionRef.unregister`.
"""


@dataclass
class RegisteredFunction:
    """A function this worker serves: its handler, how to call it, what to register."""

    function_id: str
    handler: Callable[..., Any]
    is_async: bool
    wants_metadata: bool
    description: str | None = None
    metadata: Any = None
    request_format: Any = None
    response_format: Any = None
    invocation: Any = None
    """For a function the engine calls over HTTP: its ``invocation`` config (``handler`` is then never called)."""
    status: FunctionStatus = "registering"

    @classmethod
    def of(cls, function_id: str, handler: Callable[..., Any], **details: Any) -> RegisteredFunction:
        return cls(function_id, handler, _is_async_callable(handler), _accepts_metadata(handler), **details)

    def registration(self) -> RegisterFunction:
        return RegisterFunction(
            id=self.function_id,
            description=self.description,
            metadata=encode_payload(self.metadata) if self.metadata is not None else JSON_NULL,
            request_format=encode_payload(self.request_format) if self.request_format is not None else JSON_NULL,
            response_format=encode_payload(self.response_format) if self.response_format is not None else JSON_NULL,
            invocation=encode_payload(self.invocation) if self.invocation is not None else JSON_NULL,
        )


class FunctionTable:
    """The functions of one worker, by id; status changes wake whoever waits on them (any thread)."""

    def __init__(self) -> None:
        self._functions: dict[str, RegisteredFunction] = {}
        self._changed = threading.Condition()

    def __contains__(self, function_id: str) -> bool:
        return function_id in self._functions

    def __iter__(self) -> Iterator[RegisteredFunction]:
        return iter(list(self._functions.values()))  # other threads may register meanwhile

    def get(self, function_id: str) -> RegisteredFunction | None:
        return self._functions.get(function_id)

    def add(self, function: RegisteredFunction) -> None:
        self._functions[function.function_id] = function

    def remove(self, function_id: str) -> bool:
        """Forget ``function_id``; returns whether it was there."""
        removed = self._functions.pop(function_id, None) is not None
        if removed:
            with self._changed:
                self._changed.notify_all()
        return removed

    def status(self, function_id: str) -> FunctionStatus:
        function = self._functions.get(function_id)
        return "unregistered" if function is None else function.status

    def set_status(self, function: RegisteredFunction, status: FunctionStatus) -> None:
        with self._changed:
            function.status = status
            self._changed.notify_all()

    def wait_status(
        self, function_id: str, statuses: tuple[FunctionStatus, ...], timeout_s: float | None
    ) -> FunctionStatus:
        with self._changed:
            self._changed.wait_for(lambda: self.status(function_id) in statuses, timeout_s)
        return self.status(function_id)

    def refused(self, function_id: str, owner_worker_id: str) -> None:
        """The engine refused ``function_id``: another worker serves it (a standby now), or it is builtin."""
        function = self._functions.get(function_id)
        if not owner_worker_id:
            log.error("function %s is built into the engine: this worker cannot serve it", function_id)
            if function is not None:
                self.set_status(function, "refused")
            return
        log.warning(
            "function %s is served by worker %s: this worker stands by and takes over when that one leaves",
            function_id,
            owner_worker_id,
        )
        if function is not None:
            self.set_status(function, "standby")

    def rejected(self, function_id: str, code: str, message: str) -> None:
        """The engine refused ``function_id`` for good (it said why, with ``code`` and ``message``)."""
        function = self._functions.get(function_id)
        log.error("the engine refused function %s: %s: %s", function_id, code, message)
        if function is not None:
            self.set_status(function, "refused")

    def activated(self, function_id: str) -> None:
        """The engine says this worker serves ``function_id`` (accepted, or taken over as a standby)."""
        function = self._functions.get(function_id)
        if function is None:
            return
        if function.status == "standby":
            log.info("this worker now serves %s (the worker that served it left)", function_id)
        self.set_status(function, "active")


@dataclass
class FunctionRef:
    """What :meth:`III.register_function` returns: the id, where it stands, and a way to withdraw it."""

    id: str
    _table: FunctionTable = field(repr=False)
    _unregister: Callable[[str], None] = field(repr=False)

    @property
    def status(self) -> FunctionStatus:
        """Where the registration stands (:data:`FunctionStatus`); changes as the engine answers."""
        return self._table.status(self.id)

    def wait_active(self, timeout_s: float | None = None) -> bool:
        """Block until this worker serves the function (a standby: until it has taken over).

        Returns False if ``timeout_s`` passed first, or the function was refused or withdrawn.
        """
        return self.wait_status("active", "refused", "unregistered", timeout_s=timeout_s) == "active"

    def wait_status(self, *statuses: FunctionStatus, timeout_s: float | None = None) -> FunctionStatus:
        """Block until the status is one of ``statuses`` (or ``timeout_s`` passed); returns the status then."""
        return self._table.wait_status(self.id, statuses, timeout_s)

    def unregister(self) -> None:
        """Stop serving this function (fire-and-forget)."""
        self._unregister(self.id)


def _is_async_callable(handler: Callable[..., Any]) -> bool:
    """``async def`` functions, and objects whose ``__call__`` is one."""
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(type(handler), "__call__", None)  # noqa: B004 - looking for an async __call__
    return not inspect.isfunction(handler) and inspect.iscoroutinefunction(call)


def _accepts_metadata(handler: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(handler).parameters
    except (TypeError, ValueError):
        return False
    return "metadata" in parameters
