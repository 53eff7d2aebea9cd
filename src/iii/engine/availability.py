"""The engine's own trigger types: ``engine::functions-available`` and ``engine::workers-available``.

A function bound to ``engine::functions-available`` is called (fire-and-forget) when the set of
registered function ids changes, with ``{"event": "functions_changed", "functions": [...]}``: every
function as ``engine::functions::list`` describes it (the engine's own included). Changes that come
together (a worker registering its functions one message after the other) are told once, after
:data:`COALESCE_S`; a change undone within that time is not told at all.

A function bound to ``engine::workers-available`` is called with ``{"event": ..., "worker_id": ...}``
when a worker connects (``worker_connected``), leaves (``worker_disconnected``) or describes itself
through ``engine::workers::register`` (``worker_metadata_updated``).

These are the reference engine's payloads; it polls the function set every 5 s, this engine is told of
each change by the function registry.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final

import msgspec

from iii.engine.introspection import function_summaries
from iii.protocol.codec import encode_value

if TYPE_CHECKING:
    from iii.engine.core import Core
    from iii.engine.triggers import Binding

log = logging.getLogger("iii.engine")

FUNCTIONS_AVAILABLE: Final = "engine::functions-available"
WORKERS_AVAILABLE: Final = "engine::workers-available"
COALESCE_S: Final = 0.1
"""How long a change to the function set waits for the changes that come with it."""


class Subscribers:
    """The bindings of one engine trigger type (a :class:`~iii.engine.triggers.BuiltinProvider`)."""

    def __init__(self) -> None:
        self.bindings: dict[str, Binding] = {}

    def activate(self, binding: Binding) -> str | None:
        self.bindings[binding.binding_id] = binding
        return None  # any config is accepted: these types have no settings

    def deactivate(self, binding: Binding) -> None:
        self.bindings.pop(binding.binding_id, None)


class Availability:
    """Serves the two types for ``engine`` and fires their bindings."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.functions = Subscribers()
        self.workers = Subscribers()
        core.triggers.add_builtin(
            FUNCTIONS_AVAILABLE, self.functions, "Triggered when functions are registered or unregistered"
        )
        core.triggers.add_builtin(WORKERS_AVAILABLE, self.workers, "Triggered when workers connect or disconnect")
        core.functions.change_listeners.append(self.functions_changed)
        self._told_ids = self._function_ids()
        self._pending: asyncio.TimerHandle | None = None
        self._closed = False

    def close(self) -> None:
        """Tell nothing more (engine shutdown: the workers leaving then are not news)."""
        self._closed = True
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def functions_changed(self) -> None:
        """The function set changed: tell its subscribers once the changes that come with it are in."""
        if self._pending is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a registry used outside a running engine: nothing to wait for
            self._tell_functions()
            return
        self._pending = loop.call_later(COALESCE_S, self._tell_functions)

    def worker_changed(self, event: str, worker_id: str) -> None:
        """A worker connected, left or described itself (``event``): tell the subscribers now."""
        if self.workers.bindings and not self._closed:
            self._fire(self.workers, {"event": event, "worker_id": worker_id})

    def _function_ids(self) -> frozenset[str]:
        return frozenset(entry.function_id for entry in self.core.functions.entries())

    def _tell_functions(self) -> None:
        self._pending = None
        ids = self._function_ids()
        if ids == self._told_ids:
            return  # changed and changed back
        self._told_ids = ids
        if self.functions.bindings:
            self._fire(self.functions, {"event": "functions_changed", "functions": function_summaries(self.core)})

    def _fire(self, subscribers: Subscribers, payload: dict[str, Any]) -> None:
        data = encode_value(payload)
        timeout_s = self.core.config.invocation_timeout_s
        for binding in list(subscribers.bindings.values()):
            problem = self.core.calls.start(
                binding.function_id, msgspec.Raw(data), caller=None, timeout_s=timeout_s, metadata=binding.metadata
            )
            if problem is not None:
                log.debug("trigger %s (%s) not fired: %s", binding.binding_id, binding.trigger_type, problem[1])
